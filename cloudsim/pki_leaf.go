package cloudsim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"time"

	"github.com/fleetprov/fleetprov/internal/x509p256"
)

// leafSigner makes device certificates through x509p256, without
// crypto/x509's check of every signature it has just made: the emulator's
// CA key is an ECDSA key in memory, and that verification was 3% of a
// provisioning's CPU, as much as signing. The certificate is the one x509.CreateCertificate makes for
// the same template, byte for byte (pki_leaf_test.go holds it to that);
// a CA other than P-256 ECDSA, or a certificate with host names, goes
// through crypto/x509.
type leafSigner struct {
	key    *ecdsa.PrivateKey
	issuer []byte         // the CA's subject, as in its certificate
	tail   pkix.Extension // authority key id, when the CA has a key id
}

var (
	oidExtKeyUsage     = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidKeyUsage        = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidAuthorityKeyID  = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidClientAuthUsage = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// newLeafSigner returns nil where crypto/x509 must do the work.
func newLeafSigner(ca *x509.Certificate, key crypto.Signer) *leafSigner {
	k, ok := key.(*ecdsa.PrivateKey)
	if !ok || k.Curve != elliptic.P256() || len(ca.RawSubject) == 0 {
		return nil
	}
	ls := &leafSigner{key: k, issuer: ca.RawSubject}
	if len(ca.SubjectKeyId) > 0 {
		v, err := asn1.Marshal(struct {
			ID []byte `asn1:"optional,tag:0"`
		}{ca.SubjectKeyId})
		if err != nil {
			return nil
		}
		ls.tail = pkix.Extension{Id: oidAuthorityKeyID, Value: v}
	}
	return ls
}

// leafTBS is what a certificate's signature covers, in the order and form
// crypto/x509 writes it.
type leafTBS struct {
	Version      int `asn1:"optional,explicit,default:0,tag:0"`
	SerialNumber *big.Int
	Signature    pkix.AlgorithmIdentifier
	Issuer       asn1.RawValue
	Validity     struct{ NotBefore, NotAfter time.Time }
	Subject      asn1.RawValue
	PublicKey    asn1.RawValue
	Extensions   []pkix.Extension `asn1:"omitempty,optional,explicit,tag:3"`
}

// issue signs a client certificate for pub: key usage digital signature
// (and key encipherment for an RSA key), extended key usage client
// authentication, as authority.issue asks crypto/x509 for.
func (ls *leafSigner) issue(pub crypto.PublicKey, subject pkix.Name, serial *big.Int, notBefore, notAfter time.Time) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	subj, err := asn1.Marshal(subject.ToRDNSequence())
	if err != nil {
		return nil, err
	}
	usage := byte(0x80) // digitalSignature, the first bit
	bits := 1
	if _, isRSA := pub.(*rsa.PublicKey); isRSA {
		usage |= 0x20 // keyEncipherment, the third
		bits = 3
	}
	ku, err := asn1.Marshal(asn1.BitString{Bytes: []byte{usage}, BitLength: bits})
	if err != nil {
		return nil, err
	}
	eku, err := asn1.Marshal([]asn1.ObjectIdentifier{oidClientAuthUsage})
	if err != nil {
		return nil, err
	}
	exts := []pkix.Extension{{Id: oidKeyUsage, Critical: true, Value: ku}, {Id: oidExtKeyUsage, Value: eku}}
	if ls.tail.Id != nil {
		exts = append(exts, ls.tail)
	}
	tbs := leafTBS{Version: 2, SerialNumber: serial, Signature: x509p256.Algorithm,
		Issuer: asn1.RawValue{FullBytes: ls.issuer}, Subject: asn1.RawValue{FullBytes: subj},
		PublicKey: asn1.RawValue{FullBytes: spki}, Extensions: exts}
	tbs.Validity.NotBefore, tbs.Validity.NotAfter = notBefore.UTC(), notAfter.UTC()
	tbsDER, err := asn1.Marshal(tbs)
	if err != nil {
		return nil, err
	}
	return x509p256.Sign(tbsDER, ls.key)
}
