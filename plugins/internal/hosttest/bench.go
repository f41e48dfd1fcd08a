package hosttest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"log/slog"
	"testing"

	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// BenchmarkStartAndStop measures what a run pays for its first use of a
// plugin: everything the Host starts for it (the plugin's launch and
// handshake, and the plugin host's start if it has one), the key store's
// abilities, and the stop.
func BenchmarkStartAndStop(b *testing.B, o Options) {
	for b.Loop() {
		h := o.New(b, slog.New(slog.DiscardHandler), Spec("good", o.Good))
		if _, err := h.KeyStore(context.Background(), "good"); err != nil {
			b.Fatal(err)
		}
		h.Close()
	}
}

// BenchmarkSign measures one ECDSA P-256 signature through the Host and
// a plugin.
func BenchmarkSign(b *testing.B, o Options) {
	h := o.New(b, slog.New(slog.DiscardHandler), Spec("good", o.Good))
	ks, err := h.KeyStore(context.Background(), "good")
	if err != nil {
		b.Fatal(err)
	}
	uri := "plugin:good/bench"
	if _, err := ks.CreateKey(context.Background(), &keystore.CreateKeyRequest{URI: uri, Algorithm: keystore.ECDSAP256}); err != nil {
		b.Fatal(err)
	}
	s, err := ks.CreateSigner(context.Background(), &keystore.CreateSignerRequest{URI: uri})
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("bench"))
	for b.Loop() {
		if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}
