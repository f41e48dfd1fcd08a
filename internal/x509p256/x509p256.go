// Package x509p256 signs the DER structures crypto/x509 would sign
// (a certificate's TBSCertificate, a request's CertificationRequestInfo)
// with an ECDSA P-256 key in memory, without the check crypto/x509 makes
// of every signature it has just produced. That check is there for a
// crypto.Signer that may be faulty (a token, a TPM, a plugin); for a Go
// key in memory it cost as much as the signing. Callers keep crypto/x509
// for every other key, and their tests hold the bytes to crypto/x509's.
package x509p256

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/asn1"
)

// Algorithm is ecdsa-with-SHA256, with no parameters, as crypto/x509
// writes it both inside what is signed and beside the signature.
var Algorithm = pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}}

// Sign returns the signed structure: tbs, Algorithm, and the signature of
// tbs's SHA-256 digest by key as a BIT STRING.
func Sign(tbs []byte, key *ecdsa.PrivateKey) ([]byte, error) {
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: tbs}, Algorithm, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
}
