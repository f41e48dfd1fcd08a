// Command acme-provision is a vendor's own build of fleetprov: the
// built-in machine, plus a step after RegisterThing that registers the new
// device with the vendor's backend, and the vendor's defaults. It leaves
// the local cloud out: a device needs none of it.
package main

import (
	"os"

	"github.com/fleetprov/fleetprov/cli"
	"github.com/fleetprov/fleetprov/engine"
)

var build = cli.Build{
	// The vendor's image keeps the config here, not in /etc/greengrass.
	ConfigPath: "/etc/acme/provision.yaml",
	Defaults: map[string]any{
		"templateName":    "AcmeFleetTemplate",
		"restartStrategy": "none",
	},
	Steps: func(builtin []engine.Step) ([]engine.Step, error) {
		return engine.InsertAfter(builtin, engine.RegisterThing, engine.Step{
			Name:       "RegisterWithBackend",
			State:      &registerWithBackend{url: os.Getenv("ACME_BACKEND_URL")},
			Transition: "backend_registered",
			// nil Resume: a run stopped here runs it again; the step
			// finds its own journaled work and the backend is idempotent.
		})
	},
}

func main() { os.Exit(build.Main(os.Args, os.Stdout, os.Stderr)) }
