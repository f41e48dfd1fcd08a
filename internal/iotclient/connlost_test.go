package iotclient

import (
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetprov/fleetprov/failure"
)

// A connection that drops while a request waits for its answer ends the
// wait at once, also when autopaho reports the connection up only after
// the request began waiting: it lets AwaitConnection return before it
// calls OnConnectionUp, so the first request on a new connection can start
// first.
func TestConnectionLostAfterLateConnectionUp(t *testing.T) {
	w := newWorld(t)
	w.aws.setReply(func(request) (string, []byte, bool) {
		// The request is waiting: play autopaho's late callback, then
		// drop the connection without an answer.
		w.cl.onConnectionUp(w.cl.cm, nil)
		for _, c := range w.aws.srv.Clients.GetAll() {
			if !c.Net.Inline {
				_ = w.aws.srv.DisconnectClient(c, packets.ErrServerShuttingDown)
			}
		}
		return "", nil, false
	})
	start := time.Now()
	_, err := w.cl.CreateCertificateFromCsr(reqCtx(t, 30*time.Second), testCSR)
	if err == nil || !strings.Contains(err.Error(), "lost while waiting for an answer") || !failure.IsTransient(err) {
		t.Fatalf("err = %v; want a transient 'connection lost while waiting for an answer'", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the lost connection was noticed after %s", d)
	}
	// Let the client's reconnection finish before the broker closes: a
	// connection arriving while mochi closes is a data race in mochi.
	if err := w.cl.cm.AwaitConnection(reqCtx(t, 30*time.Second)); err != nil {
		t.Fatalf("no reconnection: %v", err)
	}
}
