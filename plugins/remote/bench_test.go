package remote_test

import (
	"testing"

	"github.com/fleetprov/fleetprov/plugins/internal/hosttest"
)

// BenchmarkStartAndStop includes the plugin host's start and stop
// (plugins/host's benchmark of the same name is the plugin's share).
func BenchmarkStartAndStop(b *testing.B) { hosttest.BenchmarkStartAndStop(b, suite()) }

func BenchmarkSign(b *testing.B) { hosttest.BenchmarkSign(b, suite()) }
