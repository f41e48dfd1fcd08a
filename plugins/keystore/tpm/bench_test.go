package tpm

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// What a signature and a new key cost on a software TPM, the TPM opened
// for each as the store does. A hardware TPM is much slower (tens of
// milliseconds per ECDSA signature, seconds for an RSA key); these figures
// are fleetprov's own share and swtpm's.
func BenchmarkSign(b *testing.B) {
	sw := startSoftTPM(b)
	ctx := context.Background()
	for i, alg := range []keystore.Algorithm{keystore.ECDSAP256, keystore.RSA2048} {
		uri := fmt.Sprintf("tpm:handle=0x%08x?device=%s", 0x81000010+i, sw.device)
		s := New()
		if _, err := s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: alg}); err != nil {
			b.Fatal(err)
		}
		signer, err := s.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: uri})
		if err != nil {
			b.Fatal(err)
		}
		digest := sha256.Sum256([]byte("bench"))
		b.Run(string(alg), func(b *testing.B) {
			for b.Loop() {
				if _, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCreateKey(b *testing.B) {
	sw := startSoftTPM(b)
	ctx := context.Background()
	for _, alg := range []keystore.Algorithm{keystore.ECDSAP256, keystore.RSA2048} {
		uri := "tpm:handle=0x81000020?device=" + sw.device
		b.Run(string(alg), func(b *testing.B) {
			for b.Loop() {
				// Each replaces the last: evict, create, load, persist.
				if _, err := New().CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: alg}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
