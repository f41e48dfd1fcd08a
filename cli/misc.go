package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
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
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(app.LoadOptions(cmd.Flags()))
			if err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "config %s: ok\n  endpoint %s:%d, template %s, key %s at %s, journal %s, restart %s\n",
				cfg.File, cfg.IoTDataEndpoint, cfg.MQTTPort, cfg.TemplateName, cfg.KeyAlgorithm, cfg.KeyPath, cfg.JournalPath, cfg.RestartStrategy)
			return nil
		},
	}
	config.RegisterFlags(check.Flags())
	cmd.AddCommand(check)
	return cmd
}
