package host_test

import (
	"testing"

	"github.com/fleetprov/fleetprov/plugins/internal/hostsuite"
)

// BenchmarkStartAndStop is the plugin's share of plugins/remote's
// benchmark of the same name.
func BenchmarkStartAndStop(b *testing.B) { hostsuite.BenchmarkStartAndStop(b, suite()) }

func BenchmarkSign(b *testing.B) { hostsuite.BenchmarkSign(b, suite()) }
