package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
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
			// What killed runs left half-written goes first; a run holding
			// the journal is refused below, before anything moves.
			planPath := resetPlanPath(cfg)
			plan, err := loadResetPlan(planPath)
			if err != nil {
				return err
			}
			// Read before the certificate is moved aside: the cloud keeps
			// it ACTIVE, and the operator needs its id to retire it.
			oldCert := provisionedCertificateID(cfg)
			fresh := plan == nil
			if !fresh {
				fmt.Fprintf(app.Stdout, "finishing a reset that was interrupted (%s)\n", planPath)
			} else {
				if err := claimPresent(cfg); err != nil {
					return err
				}
				p := newResetPlan(cfg, time.Now())
				// The intent is on disk before the first move, so a reset
				// killed half way is finished by the next reset or run.
				if err := p.save(planPath); err != nil {
					return err
				}
				plan = &p
			}
			if err := plan.apply(app, cfg, planPath); err != nil {
				if fresh && errors.Is(err, engine.ErrJournalLocked) {
					// A run holds the journal, which moves first: nothing
					// moved, and the plan goes with the attempt.
					_ = os.Remove(planPath)
				}
				return err
			}
			// No run holds the journal now: what killed runs left
			// half-written can go.
			removeStaleTemps(app, cfg)
			switch {
			case strings.HasPrefix(cfg.KeyURI, "tpm:"):
				// The TPM store replaces only a key it marked as its own.
				fmt.Fprintf(app.Stdout, "device key %s stays in the TPM; the next run evicts it and makes a new one there if fleetprov made it, and stops if it did not\n", cfg.KeyURI)
			case strings.HasPrefix(cfg.KeyURI, "handle:"):
				fmt.Fprintf(app.Stdout, "device key %s stays in the TPM; the next run uses it again\n", cfg.KeyURI)
			case cfg.KeyPath == "":
				// A key in a token cannot be set aside like a file, and a
				// fresh run will not replace it: say so now.
				fmt.Fprintf(app.Stdout, "device key %s stays in its token; the next run will not replace it: delete it there, or name another object in keyPath\n", cfg.KeyURI)
			}
			fmt.Fprintln(app.Stdout, "reset: the next run provisions afresh")
			if oldCert != "" {
				// Nothing on the device can deactivate it, and after the
				// next run the thing would hold two ACTIVE certificates.
				fmt.Fprintf(app.Stdout, "certificate %s stays ACTIVE in the cloud: deactivate it with `aws iot update-certificate --certificate-id %s --new-status INACTIVE` (on the local cloud: `fleetprov cloud update-certificate --dir DIR --certificate-id %s --new-status INACTIVE`)\n", oldCert, oldCert, oldCert)
			}
			return nil
		},
	}
	configFlag(cmd.Flags())
	return cmd
}

// claimPresent refuses a reset that would leave the device unable to
// provision: its claim certificate or key file is gone, as retireClaim
// leaves it once provisioned. The device keeps its working identity.
func claimPresent(cfg *config.Config) error {
	for _, c := range []struct{ key, path string }{{"claimCertPath", cfg.ClaimCertPath}, {"claimKeyPath", cfg.ClaimKeyPath}} {
		if c.path == "" || config.IsKeyURI(c.path) || strings.HasPrefix(c.path, "handle:") {
			continue // unset: Check says so on run; in a token or a TPM: not a file
		}
		if _, err := os.Stat(c.path); errors.Is(err, fs.ErrNotExist) {
			return failure.Usage(fmt.Sprintf("reset refused, nothing changed: the claim file %s (%s) does not exist, as after retireClaim, and without a claim a reset device cannot provision again: put the claim certificate and key back, then reset", c.path, c.key))
		}
	}
	return nil
}

// provisionedCertificateID is the AWS IoT id (the SHA-256 of the DER) of
// the certificate config.yaml names, or "" if it names none that can be
// read.
func provisionedCertificateID(cfg *config.Config) string {
	if cfg.CertificateFilePath == "" {
		return ""
	}
	b, err := os.ReadFile(cfg.CertificateFilePath)
	if err != nil {
		return ""
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return ""
	}
	sum := sha256.Sum256(block.Bytes)
	return hex.EncodeToString(sum[:])
}
