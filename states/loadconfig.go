package states

import (
	"context"
	"fmt"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// LoadConfig reads and validates config.yaml with its env and flag
// overrides. Everything is checked here, before any file is touched.
type LoadConfig struct {
	Options config.LoadOptions
	// Force is run --force: the claim files are needed even when the
	// config says the device is provisioned.
	Force bool
	// Plugins finds plugin:NAME parameter sources; nil knows none. A
	// source naming an unknown plugin is a config error, found here
	// before anything is written.
	Plugins paramsource.PluginLookup
	// Loaded, if set, is the config as the command already read it with
	// these Options and without file checks (to find its plugins): it is
	// checked here rather than parsed a second time.
	Loaded *config.Config
}

var _ engine.State = (*LoadConfig)(nil)

func (s *LoadConfig) Run(_ context.Context, r *engine.Run) error {
	cfg := s.Loaded
	if cfg == nil {
		opts := s.Options
		opts.SkipFileChecks = true
		var err error
		if cfg, err = config.Load(opts); err != nil {
			return err
		}
	}
	// A provisioned device may have deleted its claim credentials, as it
	// should: "already provisioned" must not depend on them.
	if !config.IsProvisioned(cfg) || s.Force {
		if err := cfg.Check(); err != nil {
			return err
		}
		if err := cfg.CheckParamPlugins(s.Plugins); err != nil {
			return err
		}
		if err := CheckKeyURI(cfg); err != nil {
			return err
		}
	}
	for _, w := range cfg.Warnings {
		r.Log.Warn(w)
	}
	if _, err := fileOwner(cfg); err != nil {
		return failure.Usage(fmt.Sprintf("config %s: %v", cfg.File, err))
	}
	r.Config = cfg
	return nil
}
