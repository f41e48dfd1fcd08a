// Package cloudtest is what tests outside cloudsim need to provision
// against the local cloud: a started emulator in a temporary directory,
// and a way to watch a fleetprov run's journal so a test can kill the run
// inside a given state.
package cloudtest

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/syncbuf"
)

// Start initialises a local cloud in a new temporary directory, lets
// prepare change it (drop in a template or a policy; nil for nothing),
// opens it with opts (Dir is set here) and starts it. The emulator is
// closed when the test ends. Its device config is dir/config.yaml.
func Start(t testing.TB, opts cloudsim.Options, prepare func(dir string)) (string, *cloudsim.Server) {
	t.Helper()
	// The free port is found by binding and closing it, so until the
	// emulator binds it again anything else may take it (an outgoing
	// connection gets a port from the same range): then start over in a
	// new directory, as the port is written into its config.
	for attempt := 1; ; attempt++ {
		dir := t.TempDir()
		addr, err := cloudsim.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if err := cloudsim.Init(cloudsim.InitOptions{Dir: dir, Listen: addr}); err != nil {
			t.Fatal(err)
		}
		if prepare != nil {
			prepare(dir)
		}
		o := opts
		o.Dir = dir
		srv, err := cloudsim.Open(o)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			_ = srv.Close()
			if errors.Is(err, syscall.EADDRINUSE) && attempt < 10 {
				continue
			}
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Close() })
		return dir, srv
	}
}

// WaitLimit bounds a wait for a run to reach a state. It is generous: a
// test only waits this long when the run is stuck, so a busy machine is
// slow rather than failing.
const WaitLimit = 60 * time.Second

// WaitForState polls the journal until its last record is state; out is
// the run's output so far, shown if it never gets there.
func WaitForState(t testing.TB, journal, state string, out *Output) {
	t.Helper()
	deadline := time.Now().Add(WaitLimit)
	for time.Now().Before(deadline) {
		recs, _, _ := engine.ReadJournal(journal)
		if n := len(recs); n > 0 && recs[n-1].State == state {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("run never entered %s; output so far:\n%s", state, out.String())
}

// Output collects a child process's output while the test may read it.
type Output = syncbuf.Buffer
