package states

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
)

// stateFunc adapts a function to engine.State.
type stateFunc func(context.Context, *engine.Run) error

func (f stateFunc) Run(ctx context.Context, r *engine.Run) error { return f(ctx, r) }

// The cloud goes away between Persist and Verify and comes back once
// Verify has failed for it: the whole machine, as the CLI runs it, retries Verify (no
// network is transient) and ends provisioned and verified.
func TestVerifyRetriedWhileTheCloudIsAway(t *testing.T) {
	d := newDevice(t, nil)
	srv := d.startCloud(t)
	b, sess := Builtins(config.LoadOptions{Path: d.configPath}, false, nil, nil)
	defer sess.Close()

	back := make(chan error, 1)
	retried := make(chan struct{})
	var retriedOnce sync.Once
	var mu sync.Mutex
	var again *cloudsim.Server
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if again != nil {
			_ = again.Close()
		}
	})
	persist := b.Persist
	b.Persist = stateFunc(func(ctx context.Context, r *engine.Run) error {
		if err := persist.Run(ctx, r); err != nil {
			return err
		}
		if err := srv.Close(); err != nil {
			return err
		}
		go func() {
			// Back only once Verify has failed and is waiting to retry,
			// however slowly this machine gets there.
			select {
			case <-retried:
			case <-time.After(60 * time.Second):
			}
			s, err := cloudsim.Open(cloudsim.Options{Dir: d.dir})
			if err == nil {
				err = s.Start()
			}
			mu.Lock()
			again = s
			mu.Unlock()
			back <- err
		}()
		return nil
	})
	var retries []string
	eng, err := engine.New(engine.Options{
		Steps:   engine.Steps(b),
		Backoff: engine.Backoff{Initial: 100 * time.Millisecond, Max: 500 * time.Millisecond},
		Subscribers: []engine.Subscriber{engine.SubscriberFunc(func(e engine.Event) {
			if e.Type == engine.EventRetrying {
				retries = append(retries, e.State)
				retriedOnce.Do(func() { close(retried) })
			}
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := eng.Provision(ctx)
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if err := <-back; err != nil {
		t.Fatalf("the cloud did not come back: %v", err)
	}
	if len(retries) == 0 || slices.ContainsFunc(retries, func(s string) bool { return s != engine.Verify }) {
		t.Errorf("retried %q, want Verify (only) retried while the cloud was away", retries)
	}
	if res.Data.VerifiedAt.IsZero() {
		t.Error("provisioned without the journal saying the certificate was verified")
	}
}
