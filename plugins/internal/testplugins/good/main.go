// Command good is a well-behaved test plugin: an in-memory key store, the
// conformance suites' Echo parameter source and Mirror hook. With
// FLEETPROV_TESTPLUGIN_CORE_ONLY=1 its key store has no optional
// abilities. It logs one line through the SDK's logger and one plain line
// to stderr at start, so tests can find both in the host's log.
package main

import (
	"fmt"
	"os"

	"github.com/fleetprov/fleetprov/plugins/hook/hooktest"
	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/paramsource/paramsourcetest"
	"github.com/fleetprov/fleetprov/plugins/sdk"
)

// coreOnly hides the memory store's optional abilities.
type coreOnly struct{ keystore.KeyStore }

func main() {
	sdk.Logger().Info("good plugin starting", "pid", os.Getpid())
	fmt.Fprintln(os.Stderr, "plain stderr line from the good plugin")
	var ks keystore.KeyStore = keystore.NewMemory()
	if os.Getenv("FLEETPROV_TESTPLUGIN_CORE_ONLY") == "1" {
		ks = coreOnly{ks}
	}
	sdk.Serve(sdk.Plugins{KeyStore: ks, ParamSource: paramsourcetest.Echo{}, Hook: hooktest.Mirror{}})
}
