package cloudcmd

import (
	"os"
	"runtime/debug"
	"testing"
)

// serve and loadtest collect garbage less often than Go's default, unless
// the user's GOGC says otherwise.
func TestTuneGCForFleet(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	t.Setenv("GOGC", "")
	tuneGCForFleet() // GOGC set, even empty: the user's choice stands
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC set the GC percent became %d, want it left at 100", got)
	}
	t.Setenv("GOGC", "50") // for t.Setenv's restore; then unset
	if err := os.Unsetenv("GOGC"); err != nil {
		t.Fatal(err)
	}
	tuneGCForFleet()
	if got := debug.SetGCPercent(100); got != fleetGCPercent {
		t.Errorf("without GOGC the GC percent is %d, want %d", got, fleetGCPercent)
	}
}
