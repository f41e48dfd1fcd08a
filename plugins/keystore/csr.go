package keystore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"

	"github.com/fleetprov/fleetprov/internal/x509p256"
)

// CreateCSR builds a PEM certificate signing request whose subject is only
// CN=commonName (as Greengrass nucleus lite does), signed by signer, which
// may be backed by any KeyStore.
func CreateCSR(signer crypto.Signer, commonName string) ([]byte, error) {
	subject := pkix.Name{CommonName: commonName}
	var der []byte
	var err error
	if k, ok := signer.(*ecdsa.PrivateKey); ok && k.Curve == elliptic.P256() {
		der, err = csrP256(k, subject)
	} else {
		der, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, signer)
	}
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// csrP256 makes the request x509.CreateCertificateRequest makes for a P-256
// key in memory, byte for byte up to the signature (csr_test.go holds it to
// that), signed through x509p256 rather than crypto/x509: a fleet's worth
// of simulated devices (loadtest) no longer pays crypto/x509's check of its
// own signature on the cores the cloud under test needs.
func csrP256(k *ecdsa.PrivateKey, subject pkix.Name) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, err
	}
	subj, err := asn1.Marshal(subject.ToRDNSequence())
	if err != nil {
		return nil, err
	}
	info, err := asn1.Marshal(struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes []asn1.RawValue `asn1:"tag:0"`
	}{Subject: asn1.RawValue{FullBytes: subj}, PublicKey: asn1.RawValue{FullBytes: spki}})
	if err != nil {
		return nil, err
	}
	return x509p256.Sign(info, k)
}
