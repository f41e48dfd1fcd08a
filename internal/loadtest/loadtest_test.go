package loadtest

import (
	"testing"
	"time"
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
