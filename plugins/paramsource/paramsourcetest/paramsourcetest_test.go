package paramsourcetest_test

import (
	"testing"

	"github.com/fleetprov/fleetprov/plugins/paramsource/paramsourcetest"
)

// Echo in-process; plugins/host runs the same suite against Echo in a
// plugin binary.
func TestConformanceInProcess(t *testing.T) { paramsourcetest.Run(t, paramsourcetest.Echo{}) }
