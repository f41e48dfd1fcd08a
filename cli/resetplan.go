package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fleetprov/fleetprov/atomicfile"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/faultpoint"
	"github.com/fleetprov/fleetprov/states"
)

// resetPlan is reset's intent, written durably before anything moves. A
// reset killed half way (a power cut between moving the certificate aside
// and clearing config.yaml) would otherwise leave a config naming files
// that are gone, and a device that says it is provisioned; with the plan
// on disk the next reset, or the next run, finishes what it says.
type resetPlan struct {
	Time time.Time `json:"time"`
	// Moves are the files set aside, each to a backup name chosen when
	// the plan was made.
	Moves []resetMove `json:"moves"`
	// ClearConfig: config.yaml names a certificate (Greengrass's own test
	// for provisioned) and its provisioned values are to be cleared, a
	// copy kept as ConfigBackup first.
	ClearConfig  bool   `json:"clearConfig"`
	ConfigBackup string `json:"configBackup,omitempty"`
}

type resetMove struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// resetPlanPath is where the plan lives: next to the journal, which reset
// is about.
func resetPlanPath(cfg *config.Config) string { return cfg.JournalPath + ".reset" }

// newResetPlan lists what reset will do to this device, now.
func newResetPlan(cfg *config.Config, now time.Time) resetPlan {
	p := resetPlan{Time: now.UTC()}
	for _, f := range []string{cfg.JournalPath, cfg.CertPath, cfg.KeyPath, cfg.CSRPath, cfg.RootCAOutPath, states.DeviceConfigurationPath(cfg)} {
		if f == "" {
			continue // the device key is in a token
		}
		if _, err := os.Lstat(f); err != nil {
			continue
		}
		p.Moves = append(p.Moves, resetMove{From: f, To: engine.BackupName(f, now)})
	}
	if config.IsProvisioned(cfg) {
		p.ClearConfig, p.ConfigBackup = true, engine.BackupName(cfg.File, now)
	}
	return p
}

// save writes the plan durably: nothing is moved before it is on disk.
func (p resetPlan) save(path string) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600, atomicfile.Options{MkdirMode: 0o700})
}

// loadResetPlan reads an unfinished plan; nil if there is none.
func loadResetPlan(path string) (*resetPlan, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("unfinished reset %s: %w", path, err)
	}
	var p resetPlan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("unfinished reset %s is not readable (%v): remove it and run `fleetprov reset` again", path, err)
	}
	return &p, nil
}

// apply carries the plan out, or what is left of it: a move already made
// is skipped, so a plan may be applied again after any interruption. It
// removes the plan once all of it is durable.
func (p resetPlan) apply(app *App, cfg *config.Config, planPath string) error {
	var moved atomicfile.Dirs
	for _, m := range p.Moves {
		if _, err := os.Lstat(m.From); errors.Is(err, fs.ErrNotExist) {
			continue // moved before the interruption
		}
		if m.From == cfg.JournalPath {
			// The journal moves only if no run holds it.
			bak, err := engine.Archive(m.From, p.Time)
			if err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "journal kept as %s\n", bak)
			continue
		}
		faultpoint.Hit(faultpoint.RenameBefore, m.From)
		if err := os.Rename(m.From, m.To); err != nil {
			_ = moved.Sync()
			return fmt.Errorf("keep %s as backup: %w", m.From, err)
		}
		faultpoint.Hit(faultpoint.RenameAfter, m.From)
		moved.Add(m.From)
		fmt.Fprintf(app.Stdout, "%s kept as %s\n", m.From, m.To)
	}
	if err := moved.Sync(); err != nil {
		return err
	}
	if p.ClearConfig {
		// The copy first, once: after an interruption the file may
		// already be cleared, and that must not replace the copy.
		if _, err := os.Lstat(p.ConfigBackup); errors.Is(err, fs.ErrNotExist) {
			raw, err := os.ReadFile(cfg.File)
			if err != nil {
				return err
			}
			fi, err := os.Stat(cfg.File)
			if err != nil {
				return err
			}
			if err := atomicfile.WriteFile(p.ConfigBackup, raw, fi.Mode().Perm()); err != nil {
				return err
			}
		}
		if err := config.WriteBack(cfg.File, config.Provisioned{}); err != nil {
			return err
		}
		fmt.Fprintf(app.Stdout, "%s: provisioned values cleared (copy kept as %s)\n", cfg.File, p.ConfigBackup)
		// A reset killed while copying left the copy's temporary file;
		// its name is known only from the plan.
		if _, err := atomicfile.RemoveStale(p.ConfigBackup); err != nil {
			return err
		}
	}
	if err := os.Remove(planPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	faultpoint.Hit(faultpoint.ResetPlanRemoved, planPath)
	return atomicfile.SyncDir(filepath.Dir(planPath))
}

// finishInterruptedReset completes a reset that was killed half way, if
// there is one, before a run looks at the journal and the config; finished
// says it did (config.yaml was rewritten).
func finishInterruptedReset(app *App, cfg *config.Config) (finished bool, err error) {
	if cfg == nil {
		return false, nil
	}
	path := resetPlanPath(cfg)
	p, err := loadResetPlan(path)
	if err != nil || p == nil {
		return false, err
	}
	fmt.Fprintf(app.Stdout, "finishing a reset that was interrupted (%s)\n", path)
	return true, p.apply(app, cfg, path)
}
