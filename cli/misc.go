package cli

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
	"github.com/fleetprov/fleetprov/states"
)

func newGraphCmd(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "graph",
		Short: "Print the state diagram in Mermaid",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			g, err := engine.Mermaid()
			if err != nil {
				return err
			}
			fmt.Fprint(app.Stdout, g)
			return nil
		},
	}
}

func newConfigCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with config.yaml"}
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate config.yaml and the files it names, changing nothing",
		Long: `Validate config.yaml and the files it names, changing nothing, and show
the template parameters a run would send: each source is asked for its
value here (a command source runs), but the cloud is not contacted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(app.LoadOptions(cmd.Flags()))
			if err != nil {
				return err
			}
			names, err := scriptStates(app)
			if err != nil {
				return err
			}
			scripts, err := stateScripts(cfg, names, app.Logger)
			if err != nil {
				return err
			}
			// plugin:NAME sources are asked too: their plugins start
			// here and stop when the check ends.
			host := newPluginHost(app, cfg)
			defer host.Close()
			plugins := paramsource.PluginLookup(host.ParamSource)
			if err := cfg.CheckParamPlugins(plugins); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			d, err := paramsource.Derive(ctx, &paramsource.DeriveRequest{
				TemplateName: cfg.TemplateName, Literal: cfg.TemplateParams, Specs: cfg.ParamSources, Plugins: plugins,
			})
			if err != nil {
				return err
			}
			if err := states.CheckKeyURI(cfg); err != nil {
				return err
			}
			key := cfg.KeyPath
			if key == "" {
				key = cfg.KeyURI // in a token
			}
			fmt.Fprintf(app.Stdout, "config %s: ok\n  endpoint %s, template %s, key %s at %s, journal %s, restart %s\n",
				cfg.File, net.JoinHostPort(cfg.IoTDataHost, strconv.Itoa(cfg.MQTTPort)), cfg.TemplateName, cfg.KeyAlgorithm, key, cfg.JournalPath, cfg.RestartStrategy)
			if cfg.ProxyURL != "" {
				fmt.Fprintf(app.Stdout, "  proxy %s (from %s)%s\n", cfg.ProxyURL, cfg.ProxyFrom, proxyDetails(cfg))
			}
			printParams(app.Stdout, "  parameter ", d.Params, d.From)
			// What run would warn about (an unknown key, a claim
			// certificate about to expire), said here too.
			for _, w := range cfg.Warnings {
				fmt.Fprintf(app.Stdout, "  warning: %s\n", w)
			}
			if scripts != nil {
				fmt.Fprintf(app.Stdout, "  state scripts in %s (timeout %s):\n", cfg.StateScriptsDir, cfg.StateScriptTimeout)
				for _, s := range scripts.Scripts() {
					fmt.Fprintf(app.Stdout, "    %-18s %-5s %s\n", s.State, s.Action, s.Name)
				}
				if len(scripts.Scripts()) == 0 {
					fmt.Fprintln(app.Stdout, "    none")
				}
			}
			return nil
		},
	}
	config.RegisterFlags(check.Flags())
	// check only reads the file.
	check.Flags().Lookup(config.FlagConfig).Usage = "Greengrass config.yaml to check (env " + config.EnvConfig + ")"
	cmd.AddCommand(check)
	return cmd
}

// proxyDetails says whether the proxy gets credentials and what bypasses
// it, without showing the credentials.
func proxyDetails(cfg *config.Config) string {
	var s string
	if cfg.ProxyUsername != "" || cfg.ProxyPassword != "" {
		s += ", with credentials"
	}
	if cfg.NoProxy != "" {
		s += ", not for " + cfg.NoProxy
	}
	return s
}
