package keystore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestFileStoreKeysAndCSR(t *testing.T) {
	tests := []struct {
		alg   Algorithm
		check func(t *testing.T, pub any)
	}{
		{ECDSAP256, func(t *testing.T, pub any) { wantCurve(t, pub, elliptic.P256()) }},
		{ECDSAP384, func(t *testing.T, pub any) { wantCurve(t, pub, elliptic.P384()) }},
		{RSA2048, func(t *testing.T, pub any) { wantRSABits(t, pub, 2048) }},
		{RSA3072, func(t *testing.T, pub any) { wantRSABits(t, pub, 3072) }},
	}
	for _, tc := range tests {
		t.Run(string(tc.alg), func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "sub", "priv_key")
			uri := FileURI(path)
			ks, err := Open(uri)
			if err != nil {
				t.Fatal(err)
			}
			created, err := ks.CreateKey(ctx, &CreateKeyRequest{URI: uri, Algorithm: tc.alg})
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, created.PublicKey)

			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
			}
			raw, _ := os.ReadFile(path)
			if block, _ := pem.Decode(raw); block == nil || block.Type != "PRIVATE KEY" {
				t.Fatalf("key file is not PKCS#8 PEM")
			}

			pub, err := ks.GetPublicKey(ctx, &GetPublicKeyRequest{URI: uri})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(pub, created.PublicKey) {
				t.Error("GetPublicKey differs from the key created")
			}
			signer, err := ks.CreateSigner(ctx, &CreateSignerRequest{URI: uri})
			if err != nil {
				t.Fatal(err)
			}
			csrPEM, err := CreateCSR(signer, "aws-greengrass-nucleus-lite")
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(csrPEM)
			csr, err := x509.ParseCertificateRequest(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Errorf("CSR signature: %v", err)
			}
			if csr.Subject.String() != "CN=aws-greengrass-nucleus-lite" {
				t.Errorf("CSR subject = %q", csr.Subject.String())
			}
			if !reflect.DeepEqual(csr.PublicKey, created.PublicKey) {
				t.Error("CSR public key is not the stored key's")
			}
		})
	}
}

func wantCurve(t *testing.T, pub any, c elliptic.Curve) {
	t.Helper()
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != c {
		t.Fatalf("public key %T is not on %s", pub, c.Params().Name)
	}
}

func wantRSABits(t *testing.T, pub any, bits int) {
	t.Helper()
	k, ok := pub.(*rsa.PublicKey)
	if !ok || k.N.BitLen() != bits {
		t.Fatalf("public key %T is not RSA-%d", pub, bits)
	}
}

func TestFileStoreErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ks, _ := Open("file:" + dir)

	_, err := ks.CreateSigner(ctx, &CreateSignerRequest{URI: FileURI(filepath.Join(dir, "absent"))})
	if !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("missing key: err = %v, want ErrKeyNotFound", err)
	}

	secret := "-----BEGIN PRIVATE KEY-----\nTUlJQ1NFQ1JFVA==\n-----END PRIVATE KEY-----\n"
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte(secret), 0o600)
	_, err = ks.CreateSigner(ctx, &CreateSignerRequest{URI: FileURI(bad)})
	if err == nil || strings.Contains(err.Error(), "TUlJ") {
		t.Errorf("malformed key: err = %v; want an error that does not echo the key", err)
	}

	if _, err := ks.CreateKey(ctx, &CreateKeyRequest{URI: FileURI(filepath.Join(dir, "k")), Algorithm: "dsa-1024"}); err == nil || !strings.Contains(err.Error(), `"dsa-1024" is not supported`) {
		t.Errorf("unknown algorithm: err = %v", err)
	}
	if _, err := Open("tpm2:handle=1"); err == nil || !strings.Contains(err.Error(), `unknown scheme "tpm2"`) {
		t.Errorf("unknown scheme: err = %v", err)
	}
	if _, err := Open("/plain/path"); err == nil || !strings.Contains(err.Error(), "has no scheme") {
		t.Errorf("no scheme: err = %v", err)
	}
}
