package cloudcmd

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fleetprov/fleetprov/cli"
	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/config"
)

func newDemoCmd(app *cli.App) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Provision a simulated device against a local cloud, in one process",
		Long: `Starts the local cloud emulator in a new directory, provisions a device
against it exactly as "fleetprov run" would on a real device, and prints each
step, the thing name and where the files went. Needs no AWS account.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if !cmd.Flags().Changed("log-level") {
				// The progress lines tell the story; info logs from both
				// sides of the wire would drown them.
				if err := app.Quiet("warn"); err != nil {
					return err
				}
			}
			if dir == "" {
				d, err := os.MkdirTemp("", "fleetprov-demo-")
				if err != nil {
					return err
				}
				dir = d
			}
			listen, err := cloudsim.FreePort()
			if err != nil {
				return err
			}
			if err := cloudsim.Init(cloudsim.InitOptions{Dir: dir, Listen: listen}); err != nil {
				return err
			}
			srv, err := cloudsim.Open(cloudsim.Options{Dir: dir, Logger: app.Logger})
			if err != nil {
				return err
			}
			if err := srv.Start(); err != nil {
				return err
			}
			defer srv.Close()
			fmt.Fprintf(app.Stdout, "local cloud listening on %s (files in %s)\n", srv.Addr(), dir)

			cfgPath := filepath.Join(dir, "config.yaml")
			if _, err := cli.Provision(ctx, app, cli.ProvisionOptions{Load: config.LoadOptions{Path: cfgPath}}); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "\nThe cloud now lists:\n")
			if err := printThings(app.Stdout, dir, false); err != nil {
				return err
			}
			reg, err := cloudsim.ReadRegistry(dir)
			if err != nil {
				return err
			}
			fmt.Fprintln(app.Stdout)
			if err := printCerts(app.Stdout, reg, false, false); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "\nTry: fleetprov status --config %s\n", cfgPath)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the emulator and the device's files (default: a new temporary directory, kept)")
	return cli.ShowsProgress(cmd)
}
