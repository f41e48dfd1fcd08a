package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fleetprov/fleetprov/atomicfile"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
	"github.com/fleetprov/fleetprov/plugins/remote"
	"github.com/fleetprov/fleetprov/states"
)

func newRunCmd(app *App) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Provision this device, resuming from the journal",
		Long: `Provision this device by claim: make its key and CSR, get a certificate,
register the thing, write the files and config, restart its services.
A run killed at any point resumes on the next run. Exit codes: 0 provisioned
(or already provisioned), 2 usage or config error (nothing changed), 1 any
other failure, 130 or 143 interrupted by SIGINT or SIGTERM (nothing failed:
run again to resume).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, caught, stop := signalContext(cmd.Context())
			defer stop()
			_, err := Provision(ctx, app, ProvisionOptions{
				Load:  app.LoadOptions(cmd.Flags()),
				Force: force,
			})
			if sig := caught(); sig != nil && errors.Is(err, engine.ErrInterrupted) {
				return &signalError{sig: sig.(syscall.Signal), err: err}
			}
			return err
		},
	}
	config.RegisterFlags(cmd.Flags())
	cmd.Flags().BoolVar(&force, "force", false, "provision afresh even if already provisioned (old files are kept as backups)")
	return cmd
}

// ProvisionOptions say where the configuration comes from, and for tests
// and the demo, how the cloud is reached.
type ProvisionOptions struct {
	Load  config.LoadOptions
	Force bool
	Dial  states.DialFunc
	// Plugins finds plugin:NAME parameter sources; nil: the plugins the
	// config's plugins section names.
	Plugins paramsource.PluginLookup
}

// Provision runs this build's machine with the progress printer and the
// logger subscribed; run and the local cloud's demo share it.
func Provision(ctx context.Context, app *App, o ProvisionOptions) (*engine.Result, error) {
	// A reset killed half way is finished before the journal and the
	// config are read, or this run would take a half-reset device for a
	// provisioned one.
	early := peekConfig(o.Load)
	if finished, err := finishInterruptedReset(app, early); err != nil {
		return nil, err
	} else if finished {
		early = peekConfig(o.Load) // the reset rewrote config.yaml
	}
	// Plugins start when first needed and stop here on every way out:
	// success, failure, a signal (it cancels ctx, the run returns) and a
	// panic unwinding this goroutine.
	plugins := newPluginHost(app, early)
	defer plugins.Close()
	lookup := o.Plugins
	if lookup == nil {
		lookup = plugins.ParamSource
	}
	builtins, session := states.Builtins(o.Load, o.Force, o.Dial, lookup)
	defer session.Close()
	if lc, ok := builtins.LoadConfig.(*states.LoadConfig); ok {
		lc.Loaded = early // read once: LoadConfig checks it
	}
	steps := engine.Steps(builtins)
	if app.build.Steps != nil {
		var err error
		if steps, err = app.build.Steps(steps); err != nil {
			return nil, fmt.Errorf("this build's steps: %w", err)
		}
	}
	steps, scripts := withConfigHooks(steps, app.Logger)
	eng, err := engine.New(engine.Options{
		Locked:      func(cfg *config.Config) { removeStaleTemps(app, cfg) },
		Steps:       steps,
		Hooks:       runHooks(app.build.Hooks, plugins.Hooks(), scripts),
		Logger:      app.Logger,
		Force:       o.Force,
		Subscribers: []engine.Subscriber{app.subscriber()},
	})
	if err != nil {
		return nil, err
	}
	res, err := eng.Provision(ctx)
	if err != nil {
		return nil, err
	}
	if res.AlreadyProvisioned {
		// Only a device that can connect is provisioned: its config's
		// certificate and key must be there and belong together.
		if err := states.CheckProvisioned(ctx, res.Config); err != nil {
			return nil, fmt.Errorf("the device looks provisioned (%s), but %w: run `fleetprov reset`, then `fleetprov run` to provision afresh", res.Reason, err)
		}
	}
	if !res.AlreadyProvisioned && app.out.progress {
		// Logged events end with this line already (subscriber).
		app.Logger.Info(processComplete)
		c := res.Config
		key := c.KeyPath
		if key == "" {
			key = c.KeyURI // in a token
		}
		fmt.Fprintf(app.Stdout, "thing:       %s\ncertificate: %s\nprivate key: %s\nroot CA:     %s\nconfig:      %s\n",
			shown(res.Data.ThingName), c.CertPath, key, c.RootCAOutPath, c.File)
	}
	return res, nil
}

// Greengrass nucleus lite logs this line when it has provisioned a device,
// and its users' scripts look for it.
const processComplete = "Process Complete, Your device is now provisioned"

// subscriber says each step once: as a progress line, or as a log record
// (the last one the line Greengrass users look for).
func (app *App) subscriber() engine.Subscriber {
	if app.out.progress {
		return &engine.Progress{W: app.Stdout}
	}
	return engine.LogSubscriber{Logger: app.Logger, Done: processComplete}
}

// newPluginHost serves the config's plugins section: key URIs
// plugin:NAME/... resolve through it. The config is read here only for that
// section; a config that does not load gets a host without plugins, and the
// run's own LoadConfig step reports what is wrong with it. Nothing starts
// until a plugin is used: a run without plugins starts no other process.
func newPluginHost(app *App, cfg *config.Config) PluginHost {
	o := PluginOptions{Logger: app.Logger}
	if cfg != nil {
		o.Plugins = cfg.Plugins
	}
	if app.build.PluginHost != nil {
		return app.build.PluginHost(o)
	}
	return remote.New(remote.Options(o))
}

// peekConfig reads the config without a run's file checks, for what must
// be known before the engine loads it (an unfinished reset, the plugins);
// nil when it does not load: LoadConfig then reports why, with the run's
// own checks.
func peekConfig(load config.LoadOptions) *config.Config {
	load.SkipFileChecks = true
	cfg, err := config.Load(load)
	if err != nil {
		return nil
	}
	return cfg
}

// removeStaleTemps removes the temporary files killed runs left next to
// every file a run writes (one may hold a whole private key). It is called
// only while the journal is locked, so no other run is writing them.
func removeStaleTemps(app *App, cfg *config.Config) {
	var paths []string
	for _, p := range []string{cfg.KeyPath, cfg.CertPath, cfg.CSRPath, cfg.RootCAOutPath, states.DeviceConfigurationPath(cfg), cfg.File, resetPlanPath(cfg)} {
		if p != "" { // "": the device key is in a token
			paths = append(paths, p)
		}
	}
	removed, err := atomicfile.RemoveStale(paths...)
	for _, r := range removed {
		app.Logger.Info("removed a temporary file a killed run left", "file", r)
	}
	if err != nil {
		app.Logger.Warn("could not remove temporary files a killed run left", "err", err)
	}
}

// signalContext is cancelled by SIGINT or SIGTERM, and tells which came.
func signalContext(parent context.Context) (context.Context, func() os.Signal, func()) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var mu sync.Mutex
	var got os.Signal
	go func() {
		select {
		case s := <-sigs:
			mu.Lock()
			got = s
			mu.Unlock()
			cancel()
		case <-ctx.Done():
		}
	}()
	caught := func() os.Signal {
		mu.Lock()
		defer mu.Unlock()
		return got
	}
	return ctx, caught, func() { signal.Stop(sigs); cancel() }
}

// signalError is a run a signal interrupted: the shell's convention of
// 128 + the signal's number is its exit code.
type signalError struct {
	sig syscall.Signal
	err error
}

func (e *signalError) Error() string { return e.err.Error() }
func (e *signalError) Unwrap() error { return e.err }

// configFlag adds --config to commands that only need to find the config.
func configFlag(fs *pflag.FlagSet) *string {
	return fs.String(config.FlagConfig, config.DefaultPath, "Greengrass config.yaml (env "+config.EnvConfig+")")
}
