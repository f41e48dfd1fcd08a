// Package keystoretest is the conformance suite every KeyStore passes,
// in-process or behind a plugin. A store's own tests call Run with a way to
// open the store and to name a key in it.
package keystoretest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// Options say how to reach the store under test.
type Options struct {
	// Open returns the store; Run closes it.
	Open func(t *testing.T) keystore.KeyStore
	// URI names a key called name in the store.
	URI func(t *testing.T, name string) string
	// KeepsExisting says the store never replaces a key: CreateKey over
	// an existing one fails with keystore.ErrKeyExists and leaves it as
	// it was (a hardware token). Otherwise CreateKey replaces it.
	KeepsExisting bool
}

// Run runs the suite. Optional abilities are tested when the store has
// them, as a caller finds them: by type assertion.
func Run(t *testing.T, o Options) {
	ctx := context.Background()
	open := func(t *testing.T) keystore.KeyStore {
		ks := o.Open(t)
		t.Cleanup(func() {
			if err := ks.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return ks
	}

	for _, alg := range []keystore.Algorithm{keystore.ECDSAP256, keystore.ECDSAP384, keystore.RSA2048} {
		t.Run("create and sign "+string(alg), func(t *testing.T) {
			ks := open(t)
			uri := o.URI(t, "device-"+string(alg))
			res, err := ks.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: alg})
			if err != nil {
				t.Fatalf("CreateKey: %v", err)
			}
			if res.URI != uri {
				t.Errorf("CreateKey answered URI %q, want %q", res.URI, uri)
			}
			pub, err := ks.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: uri})
			if err != nil {
				t.Fatalf("GetPublicKey: %v", err)
			}
			if !equalKeys(pub, res.PublicKey) {
				t.Fatal("GetPublicKey answered another key than CreateKey")
			}
			signer, err := ks.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: uri})
			if err != nil {
				t.Fatalf("CreateSigner: %v", err)
			}
			if !equalKeys(signer.Public(), pub) {
				t.Fatal("the signer's public key is not the key's")
			}
			checkSigns(t, signer)
			// The engine's own use: a CSR signed through the store.
			csrPEM, err := keystore.CreateCSR(signer, "conformance")
			if err != nil {
				t.Fatalf("CreateCSR: %v", err)
			}
			block, _ := pem.Decode(csrPEM)
			if block == nil {
				t.Fatal("CreateCSR gave no PEM block")
			}
			csr, err := x509.ParseCertificateRequest(block.Bytes)
			if err != nil {
				t.Fatalf("parse CSR: %v", err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Fatalf("CSR signature: %v", err)
			}
		})
	}

	t.Run("a second CreateKey keeps the key, with ErrKeyExists", func(t *testing.T) {
		if !o.KeepsExisting {
			t.Skip("the store replaces keys")
		}
		ks := open(t)
		uri := o.URI(t, "kept")
		first, err := ks.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: keystore.ECDSAP256})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ks.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: keystore.ECDSAP256}); !errors.Is(err, keystore.ErrKeyExists) {
			t.Fatalf("second CreateKey: %v, want ErrKeyExists", err)
		}
		pub, err := ks.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: uri})
		if err != nil {
			t.Fatal(err)
		}
		if !equalKeys(pub, first.PublicKey) {
			t.Fatal("the refused CreateKey changed the key")
		}
	})

	t.Run("a second CreateKey replaces the key", func(t *testing.T) {
		if o.KeepsExisting {
			t.Skip("the store keeps existing keys")
		}
		ks := open(t)
		uri := o.URI(t, "replaced")
		first, err := ks.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: keystore.ECDSAP256})
		if err != nil {
			t.Fatal(err)
		}
		second, err := ks.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: keystore.ECDSAP256})
		if err != nil {
			t.Fatal(err)
		}
		if equalKeys(first.PublicKey, second.PublicKey) {
			t.Fatal("CreateKey twice gave the same key")
		}
		pub, err := ks.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: uri})
		if err != nil {
			t.Fatal(err)
		}
		if !equalKeys(pub, second.PublicKey) {
			t.Fatal("GetPublicKey answered the replaced key")
		}
	})

	t.Run("a missing key is ErrKeyNotFound", func(t *testing.T) {
		ks := open(t)
		uri := o.URI(t, "never-created")
		if _, err := ks.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: uri}); !errors.Is(err, keystore.ErrKeyNotFound) {
			t.Errorf("GetPublicKey of a missing key: %v, want ErrKeyNotFound", err)
		}
		if _, err := ks.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: uri}); !errors.Is(err, keystore.ErrKeyNotFound) {
			t.Errorf("CreateSigner of a missing key: %v, want ErrKeyNotFound", err)
		}
	})

	t.Run("an unknown algorithm is refused", func(t *testing.T) {
		ks := open(t)
		_, err := ks.CreateKey(ctx, &keystore.CreateKeyRequest{URI: o.URI(t, "bad-alg"), Algorithm: "dsa-1024"})
		if err == nil {
			t.Fatal("CreateKey with algorithm dsa-1024 succeeded")
		}
	})

	t.Run("import", func(t *testing.T) {
		ks := open(t)
		imp, ok := ks.(keystore.KeyImporter)
		if !ok {
			t.Skip("the store has no KeyImporter ability")
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		uri := o.URI(t, "imported")
		if err := imp.ImportKey(ctx, &keystore.ImportKeyRequest{URI: uri, PrivateKey: key}); err != nil {
			t.Fatalf("ImportKey: %v", err)
		}
		signer, err := ks.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: uri})
		if err != nil {
			t.Fatal(err)
		}
		if !equalKeys(signer.Public(), key.Public()) {
			t.Fatal("the imported key is not the one given")
		}
		checkSigns(t, signer)
	})

	t.Run("delete", func(t *testing.T) {
		ks := open(t)
		del, ok := ks.(keystore.KeyDeleter)
		if !ok {
			t.Skip("the store has no KeyDeleter ability")
		}
		uri := o.URI(t, "deleted")
		if _, err := ks.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: keystore.ECDSAP256}); err != nil {
			t.Fatal(err)
		}
		if err := del.DeleteKey(ctx, &keystore.DeleteKeyRequest{URI: uri}); err != nil {
			t.Fatalf("DeleteKey: %v", err)
		}
		if _, err := ks.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: uri}); !errors.Is(err, keystore.ErrKeyNotFound) {
			t.Fatalf("GetPublicKey after DeleteKey: %v, want ErrKeyNotFound", err)
		}
		if err := del.DeleteKey(ctx, &keystore.DeleteKeyRequest{URI: uri}); err != nil {
			t.Fatalf("DeleteKey of a deleted key: %v, want no error", err)
		}
	})

	t.Run("store certificate", func(t *testing.T) {
		ks := open(t)
		st, ok := ks.(keystore.CertificateStorer)
		if !ok {
			t.Skip("the store has no CertificateStorer ability")
		}
		uri := o.URI(t, "with-cert")
		if _, err := ks.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: keystore.ECDSAP256}); err != nil {
			t.Fatal(err)
		}
		signer, err := ks.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: uri})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.StoreCertificate(ctx, &keystore.StoreCertificateRequest{URI: uri, Certificate: selfSigned(t, signer)}); err != nil {
			t.Fatalf("StoreCertificate: %v", err)
		}
	})
}

func equalKeys(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// checkSigns signs a digest the ways the engine and TLS may ask and
// verifies each signature with the public key.
func checkSigns(t *testing.T, s crypto.Signer) {
	t.Helper()
	digest := sha256.Sum256([]byte("fleetprov conformance"))
	switch pub := s.Public().(type) {
	case *ecdsa.PublicKey:
		sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		if !ecdsa.VerifyASN1(pub, digest[:], sig) {
			t.Fatal("ECDSA signature does not verify")
		}
	case *rsa.PublicKey:
		sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatalf("Sign PKCS #1 v1.5: %v", err)
		}
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
			t.Fatalf("PKCS #1 v1.5 signature: %v", err)
		}
		pss := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
		sig, err = s.Sign(rand.Reader, digest[:], pss)
		if err != nil {
			t.Fatalf("Sign PSS: %v", err)
		}
		if err := rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, pss); err != nil {
			t.Fatalf("PSS signature: %v", err)
		}
	default:
		t.Fatalf("unexpected public key type %T", pub)
	}
}

func selfSigned(t *testing.T, s crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "conformance"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
