package keystore

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"strings"
	"testing"
)

// A P-256 key in memory gets the request crypto/x509 makes for it, byte
// for byte up to the signature, and the signature verifies; other keys
// still get crypto/x509's own.
func TestCreateCSRMatchesCryptoX509(t *testing.T) {
	for _, alg := range []Algorithm{ECDSAP256, ECDSAP384, RSA2048} {
		key, err := NewKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		if k, ok := key.(*ecdsa.PrivateKey); alg == ECDSAP256 && (!ok || k.Curve != elliptic.P256()) {
			t.Fatalf("NewKey(%s) is a %T: the request would not take the P-256 path this test is for", alg, key)
		}
		for _, cn := range []string{"aws-greengrass-nucleus-lite", "", "gerät-ü", strings.Repeat("x", 64)} {
			p, err := CreateCSR(key, cn)
			if err != nil {
				t.Fatalf("%s %q: %v", alg, cn, err)
			}
			block, _ := pem.Decode(p)
			if block == nil || block.Type != "CERTIFICATE REQUEST" {
				t.Fatalf("%s %q: not a PEM request: %s", alg, cn, p)
			}
			got, err := x509.ParseCertificateRequest(block.Bytes)
			if err != nil {
				t.Fatalf("%s %q: %v", alg, cn, err)
			}
			if err := got.CheckSignature(); err != nil {
				t.Errorf("%s %q: signature: %v", alg, cn, err)
			}
			wantDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
			if err != nil {
				t.Fatal(err)
			}
			want, err := x509.ParseCertificateRequest(wantDER)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.RawTBSCertificateRequest, want.RawTBSCertificateRequest) || got.SignatureAlgorithm != want.SignatureAlgorithm {
				t.Errorf("%s %q: request info\n ours   %x %v\n x509's %x %v", alg, cn, got.RawTBSCertificateRequest, got.SignatureAlgorithm, want.RawTBSCertificateRequest, want.SignatureAlgorithm)
			}
		}
	}
}
