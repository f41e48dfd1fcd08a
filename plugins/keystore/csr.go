package keystore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
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
// that), without the check crypto/x509 then makes of its own signature.
// That check is there for a crypto.Signer that may be faulty (a token, a
// TPM, a plugin): those still go through crypto/x509. For a Go key in
// memory it cost as much as the signing, and a fleet's worth of simulated
// devices (loadtest) pays it on the cores the cloud under test needs.
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
	digest := sha256.Sum256(info)
	sig, err := ecdsa.SignASN1(rand.Reader, k, digest[:])
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(struct {
		Info      asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: info}, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}},
		asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
}
