package loadtest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
)

// BenchmarkProvision provisions b.N devices, 50 at a time, through the
// local cloud in this process: both ends of every TLS handshake and
// request share the machine, as they do for `fleetprov loadtest` against
// `cloud serve` on one host. With -cpuprofile it shows where a
// provisioning's CPU goes (docs/performance.md).
func BenchmarkProvision(b *testing.B) {
	dir, _ := cloudtest.Start(b, cloudsim.Options{}, nil)
	cfg, err := config.Load(config.LoadOptions{Path: filepath.Join(dir, "config.yaml")})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	res, err := Run(context.Background(), Options{Config: cfg, Devices: b.N, Concurrency: 50, Params: map[string]string{"SerialNumber": "bench-{n:07}"}})
	if err != nil {
		b.Fatal(err)
	}
	if res.Failed > 0 {
		b.Fatalf("%d devices failed: %+v", res.Failed, res.Failures)
	}
	b.ReportMetric(res.PerSecond, "provisionings/s")
}
