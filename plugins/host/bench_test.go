package host_test

import (
	"testing"

	"github.com/fleetprov/fleetprov/plugins/internal/hosttest"
)

// BenchmarkStartAndStop is the plugin's share of plugins/remote's
// benchmark of the same name.
func BenchmarkStartAndStop(b *testing.B) { hosttest.BenchmarkStartAndStop(b, suite()) }

func BenchmarkSign(b *testing.B) { hosttest.BenchmarkSign(b, suite()) }
