package states

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fleetprov/fleetprov/atomicfile"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
)

// Persist writes the certificate, the root CA and the device configuration
// crash-safely, then the
// provisioned values into config.yaml. Every write replaces whole files, so
// running it again after a crash gives the same result.
type Persist struct{}

var _ engine.State = (*Persist)(nil)

func (*Persist) Run(_ context.Context, r *engine.Run) error {
	cfg, d := r.Config, r.Data
	if d.CertificatePEM == "" || d.ThingName == "" {
		return fmt.Errorf("journal has no registered certificate to persist: run `fleetprov reset` and provision again")
	}
	owner, err := fileOwner(cfg)
	if err != nil {
		return err
	}
	opts := atomicfile.Options{MkdirMode: 0o755}
	if owner != nil {
		opts.Owner = &atomicfile.Owner{UID: owner.UID, GID: owner.GID}
	}
	rootCA, err := os.ReadFile(cfg.RootCAPath)
	if err != nil {
		return fmt.Errorf("read root CA %s: %w", cfg.RootCAPath, err)
	}
	devCfg, err := json.MarshalIndent(orEmpty(d.DeviceConfiguration), "", "  ")
	if err != nil {
		return err
	}
	devCfgPath := DeviceConfigurationPath(cfg)
	// Each file replaced whole; their directory (usually one for all)
	// synced once after, rather than once per file: a crash before that
	// leaves each file old or new, and this step runs again.
	var dirs atomicfile.Dirs
	for _, f := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{cfg.CertPath, []byte(d.CertificatePEM), 0o600},
		{cfg.RootCAOutPath, rootCA, 0o644},
		{devCfgPath, append(devCfg, '\n'), 0o644},
	} {
		if err := atomicfile.Replace(f.path, f.data, f.perm, opts); err != nil {
			return err
		}
		dirs.Add(f.path)
	}
	if owner != nil {
		// Greengrass runs as posixUser and must be able to enter the
		// directory holding its credentials.
		for _, dir := range uniqueDirs(cfg.CertPath, cfg.KeyPath, cfg.RootCAOutPath) { // a token key has no path: skipped
			// Never through a link: config refuses one here, and one put
			// in its place since must not give its target away.
			if err := atomicfile.ChownDir(dir, atomicfile.Owner{UID: owner.UID, GID: owner.GID}); err != nil {
				return err
			}
			dirs.AddDir(dir)
		}
	}
	// Durable before config.yaml says provisioned.
	if err := dirs.Sync(); err != nil {
		return err
	}
	err = config.WriteBack(cfg.File, config.Provisioned{
		ThingName:           d.ThingName,
		CertificateFilePath: cfg.CertPath,
		PrivateKeyPath:      cfg.GreengrassKeyPath(),
		RootCAPath:          cfg.RootCAOutPath,
		IoTDataEndpoint:     cfg.IoTDataHost,
		IoTCredEndpoint:     cfg.IoTCredEndpoint,
	})
	if err != nil {
		return err
	}
	d.Files = nil
	if cfg.KeyPath != "" {
		d.Files = append(d.Files, cfg.KeyPath)
	}
	if cfg.CertificateMode == config.ModeCSR {
		d.Files = append(d.Files, cfg.CSRPath)
	}
	d.Files = append(d.Files, cfg.CertPath, cfg.RootCAOutPath, devCfgPath, cfg.File)
	r.Log.Info("credentials written", "certificate", cfg.CertPath, "key", cfg.GreengrassKeyPath(), "rootCA", cfg.RootCAOutPath, "config", cfg.File)
	return nil
}

// DeviceConfigurationPath is where Persist writes the deviceConfiguration
// RegisterThing returned: a JSON object next to the certificate.
func DeviceConfigurationPath(cfg *config.Config) string {
	return filepath.Join(filepath.Dir(cfg.CertPath), "deviceConfiguration.json")
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func uniqueDirs(paths ...string) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range paths {
		if p == "" {
			continue
		}
		if d := filepath.Dir(p); !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}
