package states

import (
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/config"
)

// All returns every state of the table wired to one cloud session. The
// caller closes the session when the run ends.
func All(load config.LoadOptions, force bool, dial DialFunc) ([]engine.State, *Session) {
	if dial == nil {
		dial = DialIoT
	}
	s := &Session{Dial: dial}
	return []engine.State{
		&LoadConfig{Options: load, Force: force},
		&PrepareKey{},
		&CreateCertificate{Session: s},
		&RegisterThing{Session: s},
		&Persist{},
		&Restart{},
	}, s
}
