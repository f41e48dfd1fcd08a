package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetprov/fleetprov/atomicfile"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/states"
)

func newResetCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Forget the journal so the next run provisions afresh (old files kept as backups)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(app.loadOptions(cmd.Flags(), true))
			if err != nil {
				return err
			}
			now := time.Now()
			// The journal first: it fails if a run holds it, before
			// anything else is moved.
			bak, err := engine.Archive(cfg.JournalPath, now)
			if err != nil {
				return err
			}
			if bak != "" {
				fmt.Fprintf(app.Stdout, "journal kept as %s\n", bak)
			}
			// With the journal moved aside no run holds it: what killed
			// runs left half-written goes before anything is moved.
			removeStaleTemps(app, cfg)
			// Each directory a file was moved in is fsynced once, after
			// the moves, so they survive a power cut.
			var moved atomicfile.Dirs
			for _, p := range []string{cfg.CertPath, cfg.KeyPath, cfg.CSRPath, cfg.RootCAOutPath, states.DeviceConfigurationPath(cfg)} {
				if p == "" {
					continue // the device key is in a token
				}
				dst := engine.BackupName(p, now)
				err := os.Rename(p, dst)
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				if err != nil {
					_ = moved.Sync() // what was moved stays moved; the rename's error is the one to report
					return fmt.Errorf("keep %s as backup: %w", p, err)
				}
				moved.Add(p)
				fmt.Fprintf(app.Stdout, "%s kept as %s\n", p, dst)
			}
			if err := moved.Sync(); err != nil {
				return err
			}
			if cfg.KeyPath == "" {
				// A key in a token cannot be set aside like a file, and a
				// fresh run will not replace it: say so now.
				fmt.Fprintf(app.Stdout, "device key %s stays in its token; the next run will not replace it: delete it there, or name another object in keyPath\n", cfg.KeyURI)
			}
			if config.IsProvisioned(cfg) {
				// Greengrass treats a config naming a certificate as
				// provisioned: clear the values, keeping a copy of the file.
				raw, err := os.ReadFile(cfg.File)
				if err != nil {
					return err
				}
				fi, err := os.Stat(cfg.File)
				if err != nil {
					return err
				}
				dst := engine.BackupName(cfg.File, now)
				if err := atomicfile.WriteFile(dst, raw, fi.Mode().Perm()); err != nil {
					return err
				}
				if err := config.WriteBack(cfg.File, config.Provisioned{}); err != nil {
					return err
				}
				fmt.Fprintf(app.Stdout, "%s: provisioned values cleared (copy kept as %s)\n", cfg.File, dst)
			}
			fmt.Fprintln(app.Stdout, "reset: the next run provisions afresh")
			return nil
		},
	}
	configFlag(cmd.Flags())
	return cmd
}
