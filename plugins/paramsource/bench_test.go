package paramsource

import (
	"context"
	"path/filepath"
	"testing"
)

// How long each source takes on this device: a run pays it once per
// provisioning identity.
func BenchmarkSources(b *testing.B) {
	dir := b.TempDir()
	serial := filepath.Join(dir, "serial")
	writeFile(b, serial, "EE-1234\n")
	b.Setenv("FLEETPROV_BENCH_SERIAL", "SN-1")
	for _, c := range []struct {
		name  string
		value map[string]any
	}{
		{"mac", map[string]any{"source": "mac"}},
		{"machine-id", map[string]any{"source": "machine-id"}},
		{"env", map[string]any{"source": "env", "variable": "FLEETPROV_BENCH_SERIAL"}},
		{"file", map[string]any{"source": "file", "path": serial}},
		{"command", map[string]any{"source": "command", "command": []any{"echo", "SN-1"}}},
	} {
		s, err := ParseSpec("Serial", c.value)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := Derive(context.Background(), &DeriveRequest{Specs: []Spec{s}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
