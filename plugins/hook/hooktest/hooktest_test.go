package hooktest_test

import (
	"testing"

	"github.com/fleetprov/fleetprov/plugins/hook/hooktest"
)

// Mirror in-process; plugins/host runs the same suite against Mirror in a
// plugin binary.
func TestConformanceInProcess(t *testing.T) { hooktest.Run(t, hooktest.Mirror{}) }
