package remote_test

import (
	"testing"

	"github.com/fleetprov/fleetprov/plugins/internal/hostsuite"
)

// BenchmarkStartAndStop includes the plugin host's start and stop
// (plugins/host's benchmark of the same name is the plugin's share).
func BenchmarkStartAndStop(b *testing.B) { hostsuite.BenchmarkStartAndStop(b, suite()) }

func BenchmarkSign(b *testing.B) { hostsuite.BenchmarkSign(b, suite()) }
