package states

import (
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/config"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// All returns every state of the table wired to one cloud session. The
// caller closes the session when the run ends. plugins finds plugin:NAME
// parameter sources (nil: none).
func All(load config.LoadOptions, force bool, dial DialFunc, plugins paramsource.PluginLookup) ([]engine.State, *Session) {
	if dial == nil {
		dial = DialIoT
	}
	s := &Session{Dial: dial}
	return []engine.State{
		&LoadConfig{Options: load, Force: force, Plugins: plugins},
		&DeriveParams{Plugins: plugins},
		&PrepareKey{},
		&CreateCertificate{Session: s},
		&RegisterThing{Session: s},
		&Persist{},
		&Restart{},
	}, s
}
