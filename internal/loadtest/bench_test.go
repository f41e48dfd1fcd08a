package loadtest

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

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
	before := cpuTime(b)
	res, err := Run(context.Background(), Options{Config: cfg, Devices: b.N, Concurrency: 50, Params: map[string]string{"SerialNumber": "bench-{n:07}"}})
	if err != nil {
		b.Fatal(err)
	}
	if res.Failed > 0 {
		b.Fatalf("%d devices failed: %+v", res.Failed, res.Failures)
	}
	b.ReportMetric(res.PerSecond, "provisionings/s")
	// CPU per device is what a busy machine cannot skew: throughput there
	// depends on what else runs, the CPU a provisioning costs does not.
	b.ReportMetric(float64(cpuTime(b)-before)/float64(time.Millisecond)/float64(b.N), "cpu-ms/device")
}

// cpuTime is the user and system CPU time the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
