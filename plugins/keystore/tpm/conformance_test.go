package tpm

import (
	"fmt"
	"sync"
	"testing"

	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/keystore/keystoretest"
)

// handles gives each key name of a test a persistent handle of its own.
type handles struct {
	mu   sync.Mutex
	next uint32
	m    map[string]uint32
}

func (h *handles) of(name string) uint32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m, h.next = map[string]uint32{}, 0x81000100
	}
	if v, ok := h.m[name]; ok {
		return v
	}
	h.next++
	h.m[name] = h.next
	return h.next
}

// The store passes the key store conformance suite on a software TPM,
// with fleetprov's own URI form (tpm:handle=...) and device= in the URI.
func TestConformance(t *testing.T) {
	sw := startSoftTPM(t)
	var hs handles
	keystoretest.Run(t, keystoretest.Options{
		Open: func(t *testing.T) keystore.KeyStore { return New() },
		URI: func(t *testing.T, name string) string {
			return fmt.Sprintf("tpm:handle=0x%08x?device=%s", hs.of(name), sw.device)
		},
	})
}
