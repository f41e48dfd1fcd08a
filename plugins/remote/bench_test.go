package remote_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/remote"
)

// BenchmarkStartAndStop measures what a run pays for its first use of a
// plugin: the plugin host's start, the plugin's launch and handshake, the
// key store's abilities, and the stop of both (plugins/host's benchmark
// of the same name is the plugin's share).
func BenchmarkStartAndStop(b *testing.B) {
	for b.Loop() {
		h := remote.New(remote.Options{Plugins: []config.Plugin{spec("good", goodBin)}})
		if _, err := h.KeyStore(context.Background(), "good"); err != nil {
			b.Fatal(err)
		}
		h.Close()
	}
}

// BenchmarkSign measures one ECDSA P-256 signature through the plugin
// host and a plugin.
func BenchmarkSign(b *testing.B) {
	h := remote.New(remote.Options{Plugins: []config.Plugin{spec("good", goodBin)}})
	defer h.Close()
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
