// Command fleetprov-plugin-host runs fleetprov's plugins. fleetprov starts
// it the first time a run needs a plugin and talks to it over its stdin
// and stdout; it stops its plugins and exits when fleetprov closes it or
// exits. It is a process of its own so that fleetprov does not link
// go-plugin and gRPC: see docs/plugins.md.
package main

import (
	"os"

	"github.com/fleetprov/fleetprov/plugins/remote/serve"
)

func main() { os.Exit(serve.Main()) }
