// Package cli is fleetprov's command tree. A binary's main is one call:
// Build{...}.Main(os.Args, os.Stdout, os.Stderr). A vendor's own build sets
// its steps and defaults in Build.
package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/hook"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// Exit codes, stable because scripts and systemd units test them.
const (
	ExitOK      = 0
	ExitFailure = 1 // provisioning or any other runtime failure
	ExitUsage   = 2 // bad flags or config; nothing was changed
)

// App carries what every command shares: output streams and the one slog
// logger that all libraries' logs are routed into.
type App struct {
	Stdout, Stderr io.Writer
	LogLevel       string
	LogFormat      string
	Logger         *slog.Logger
	build          Build
	out            output
}

// LoadOptions returns where this build reads its configuration from, for
// a command with the config flags registered on fs (nil for none).
func (app *App) LoadOptions(fs *pflag.FlagSet) config.LoadOptions {
	return app.loadOptions(fs, false)
}

func (app *App) loadOptions(fs *pflag.FlagSet, skipFileChecks bool) config.LoadOptions {
	return config.LoadOptions{Flags: fs, Environ: os.Environ(), Defaults: app.build.Defaults,
		DefaultPath: app.build.ConfigPath, SkipFileChecks: skipFileChecks}
}

// Build describes one fleetprov binary: the standard one (cmd/fleetprov),
// or a vendor's own, built from its own module with its own steps and
// defaults (see docs/vendor-builds.md).
type Build struct {
	// Steps turns the built-in machine into the one this build runs: add
	// a step of the vendor's own, replace or remove one (engine.InsertAfter,
	// engine.Replace, engine.Remove). nil runs the built-in machine.
	Steps func(builtin []engine.Step) ([]engine.Step, error)
	// Defaults are values of the fleet_provisioning configuration (by key
	// name, as in config.yaml: "templateName", "restartStrategy", ...) used
	// where the file, the environment and the flags leave a key unset.
	Defaults map[string]any
	// ConfigPath is the config file read when neither --config nor
	// FLEETPROV_CONFIG names one; "" means /etc/greengrass/config.yaml.
	ConfigPath string
	// Hooks are this build's own hooks, compiled in: asked before the
	// state scripts of stateScriptsDir, in order (see docs/hooks.md).
	Hooks []hook.Hook
	// Commands adds commands to the tree. The standard build adds the
	// local cloud's (package cli/cloudcmd); a device-only build leaves
	// them out, and the local cloud with them.
	Commands []func(*App) *cobra.Command
	// PluginHost runs the plugins of the config's plugins section for
	// one command. nil runs them in the plugin host process
	// (plugins/remote, cmd/fleetprov-plugin-host), so that fleetprov
	// itself does not link go-plugin and gRPC. A build that prefers one
	// process, and accepts their cost in every run, sets
	//
	//	func(o cli.PluginOptions) cli.PluginHost { return host.New(host.Options(o)) }
	//
	// (package plugins/host).
	PluginHost func(PluginOptions) PluginHost
}

// PluginOptions are what a PluginHost is made from: the plugins section
// and the logger their logs go to.
type PluginOptions struct {
	Plugins []config.Plugin
	Logger  *slog.Logger
}

// PluginHost runs a command's plugins: plugin:NAME key URIs resolve
// through the one made last (plugins/remote.Host, plugins/host.Host).
type PluginHost interface {
	ParamSource(name string) (paramsource.ParamSource, error)
	Hooks() []hook.Hook
	Close() error
}

// Main runs the command line of this build and returns the process exit
// code. Invoked under the name fleet-provisioning (as Greengrass nucleus
// lite installs its program), it behaves as "fleetprov run".
func (b Build) Main(args []string, stdout, stderr io.Writer) int {
	app := &App{Stdout: stdout, Stderr: stderr, build: b}
	root := newRootCmd(app)
	for _, c := range b.Commands {
		root.AddCommand(c(app))
	}
	argv := args[1:]
	if len(args) > 0 && strings.TrimSuffix(filepath.Base(args[0]), ".exe") == "fleet-provisioning" {
		argv = append([]string{"run"}, argv...)
	}
	root.SetArgs(argv)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	app.closeOutput()
	if err == nil {
		return ExitOK
	}
	// A failed step is said once: as its log record when the events are
	// logged, else as this line.
	var failed *engine.StateError
	logged := (errors.As(err, &failed) && !failure.IsUsage(err)) || errors.Is(err, engine.ErrInterrupted)
	if !logged || !app.out.eventsLogged() {
		fmt.Fprintf(stderr, "fleetprov: %s\n", failure.Line(err))
	}
	var se *signalError
	if errors.As(err, &se) {
		return 128 + int(se.sig)
	}
	if failure.IsUsage(err) {
		return ExitUsage
	}
	var fe *flagError
	if errors.As(err, &fe) {
		return ExitUsage
	}
	return ExitFailure
}

// flagError wraps cobra's own parse errors (unknown flag, missing value) so
// they exit with ExitUsage.
type flagError struct{ err error }

func (e *flagError) Error() string { return e.err.Error() + " (see --help)" }
func (e *flagError) Unwrap() error { return e.err }

func newRootCmd(app *App) *cobra.Command {
	root := &cobra.Command{
		Use:           "fleetprov",
		Short:         "AWS IoT fleet provisioning by claim, resumable after power loss",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return app.setupOutput(cmd)
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &flagError{err: err} })
	root.Version = engine.Version()
	root.SetVersionTemplate("fleetprov {{.Version}}\n")
	root.PersistentFlags().StringVar(&app.LogLevel, "log-level", "", "log level: debug, info, warn or error (default info; warn beside progress lines on a terminal)")
	root.PersistentFlags().StringVar(&app.LogFormat, "log-format", "", "log format: text, json or journal (default journal under systemd, else text; given, it replaces the progress lines)")
	root.AddCommand(
		ShowsProgress(newRunCmd(app)),
		newStatusCmd(app),
		newResetCmd(app),
		newConfigCmd(app),
		newGraphCmd(app),
	)
	return root
}
