package states

import (
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
)

// Builtins returns the work of every built-in step, wired to one cloud
// session, for engine.Steps. The caller closes the session when the run
// ends.
func Builtins(load config.LoadOptions, force bool, dial DialFunc) (engine.Builtins, *Session) {
	if dial == nil {
		dial = DialIoT
	}
	s := &Session{Dial: dial}
	return engine.Builtins{
		LoadConfig:        &LoadConfig{Options: load, Force: force},
		PrepareKey:        &PrepareKey{},
		CreateCertificate: &CreateCertificate{Session: s},
		RegisterThing:     &RegisterThing{Session: s},
		Persist:           &Persist{},
		Restart:           &Restart{},
	}, s
}
