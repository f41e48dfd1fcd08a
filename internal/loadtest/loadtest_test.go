package loadtest

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
)

func TestExpand(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		n       int
		want    string
	}{
		{"lt-{n}", 7, "lt-7"},
		{"lt-{n:05}", 42, "lt-00042"},
		{"{n}-{n:03}", 5, "5-005"},
		{"plain", 3, "plain"},
	} {
		got, err := expand(tc.pattern, tc.n)
		if err != nil || got != tc.want {
			t.Errorf("expand(%q, %d) = %q, %v; want %q", tc.pattern, tc.n, got, err, tc.want)
		}
	}
	for _, bad := range []string{"x-{m}", "x-{n", "x-{n:0}", "x-{n:5}", "x-{n:0x}"} {
		if _, err := expand(bad, 1); err == nil {
			t.Errorf("expand(%q) accepted", bad)
		}
	}
}

// Nearest-rank quantiles: with 100 samples 1..100 ms, p50 is 50 ms, p99 is
// 99 ms; with one sample every quantile is it.
func TestQuantile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 50 * time.Millisecond, 0.9: 90 * time.Millisecond, 0.99: 99 * time.Millisecond, 1: 100 * time.Millisecond} {
		if got := quantile(ds, q); got != want {
			t.Errorf("quantile(%v) = %v, want %v", q, got, want)
		}
	}
	if got := quantile([]time.Duration{time.Second}, 0.99); got != time.Second {
		t.Errorf("one sample: %v", got)
	}
}

// The claim and roots are read once, before any device starts: files that
// went bad after the config was checked give one error naming them, and
// no device is counted.
func TestRunReadsTheClaimOnce(t *testing.T) {
	dir, _ := cloudtest.Start(t, cloudsim.Options{}, nil)
	cfg, err := config.Load(config.LoadOptions{Path: filepath.Join(dir, "config.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	broken := *cfg
	broken.ClaimKeyPath = filepath.Join(t.TempDir(), "gone.key")
	res, err := Run(context.Background(), Options{Config: &broken, Devices: 3, Concurrency: 2})
	if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), "gone.key") || res != nil {
		t.Fatalf("Run with a missing claim key = %v, %v; want an options error naming the key file", res, err)
	}
	noRoots := *cfg
	noRoots.RootCAPath = cfg.ClaimKeyPath // a PEM file with no certificate in it
	if _, err := Run(context.Background(), Options{Config: &noRoots, Devices: 3, Concurrency: 2}); !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Fatalf("Run with roots that hold no certificate = %v; want an options error", err)
	}
	res, err = Run(context.Background(), Options{Config: cfg, Devices: 3, Concurrency: 2, Params: map[string]string{"SerialNumber": "once-{n}"}})
	if err != nil || res.Succeeded != 3 {
		t.Fatalf("Run = %+v, %v; want 3 provisioned", res, err)
	}
}
