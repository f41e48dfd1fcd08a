package states

import (
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// Builtins returns the work of every built-in step, wired to one cloud
// session, for engine.Steps. The caller closes the session when the run
// ends. plugins finds plugin:NAME parameter sources (nil: none).
func Builtins(load config.LoadOptions, force bool, dial DialFunc, plugins paramsource.PluginLookup) (engine.Builtins, *Session) {
	if dial == nil {
		dial = DialIoT
	}
	s := &Session{Dial: dial}
	return engine.Builtins{
		LoadConfig:        &LoadConfig{Options: load, Force: force, Plugins: plugins},
		DeriveParams:      &DeriveParams{Plugins: plugins},
		PrepareKey:        &PrepareKey{},
		CreateCertificate: &CreateCertificate{Session: s},
		RegisterThing:     &RegisterThing{Session: s},
		Persist:           &Persist{},
		Verify:            &Verify{},
		Restart:           &Restart{},
	}, s
}
