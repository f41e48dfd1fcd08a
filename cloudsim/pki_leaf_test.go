package cloudsim

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

// The emulator's own certificate signer makes, for every kind of device
// key and subject, exactly the certificate crypto/x509 makes from the
// same template: same bytes to be signed, and a signature that verifies.
func TestLeafSignerMatchesCryptoX509(t *testing.T) {
	now := time.Now()
	ca, err := newAuthority(now)
	if err != nil {
		t.Fatal(err)
	}
	if ca.leaf == nil {
		t.Fatal("a new emulator CA (ECDSA P-256) does not get the fast signer")
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	subjects := []pkix.Name{
		{CommonName: "AWS IoT Certificate"},
		{},
		{CommonName: "dev-ü", Organization: []string{"Acme", "Plant 4"}, Country: []string{"DE"}, SerialNumber: "SN-1"},
	}
	for name, pub := range map[string]crypto.PublicKey{"P-256": p256.Public(), "P-384": p384.Public(), "RSA-2048": rsaKey.Public(), "Ed25519": edPub} {
		for i, subject := range subjects {
			for _, notAfter := range []time.Time{deviceCertNotAfter, time.Date(2051, 3, 1, 0, 0, 0, 0, time.UTC)} {
				serial := new(big.Int).Lsh(big.NewInt(int64(i+1)), 100)
				notBefore := now.Add(-5 * time.Minute) // with nanoseconds, as the emulator's clock gives
				got, err := ca.leaf.issue(pub, subject, serial, notBefore, notAfter)
				if err != nil {
					t.Fatalf("%s, subject %d: %v", name, i, err)
				}
				tmpl := &x509.Certificate{SerialNumber: serial, Subject: subject, NotBefore: notBefore, NotAfter: notAfter,
					KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
				if _, isRSA := pub.(*rsa.PublicKey); isRSA {
					tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
				}
				want, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
				if err != nil {
					t.Fatal(err)
				}
				gc, err := x509.ParseCertificate(got)
				if err != nil {
					t.Fatalf("%s, subject %d: ours does not parse: %v", name, i, err)
				}
				wc, err := x509.ParseCertificate(want)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(gc.RawTBSCertificate, wc.RawTBSCertificate) {
					t.Errorf("%s, subject %d, until %d: to be signed\n ours   %x\n x509's %x", name, i, notAfter.Year(), gc.RawTBSCertificate, wc.RawTBSCertificate)
				}
				if err := gc.CheckSignatureFrom(ca.cert); err != nil {
					t.Errorf("%s, subject %d: signature: %v", name, i, err)
				}
				if _, err := gc.Verify(x509.VerifyOptions{Roots: ca.pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
					t.Errorf("%s, subject %d: does not verify as a client certificate: %v", name, i, err)
				}
			}
		}
	}
}

// A CA crypto/x509 must sign with (not P-256 ECDSA) gets no fast signer,
// and its certificates still verify.
func TestOtherCAsSignThroughCryptoX509(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "P-384 CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().AddDate(1, 0, 0), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	a := newAuthorityFrom(cert, key)
	if a.leaf != nil {
		t.Fatal("a P-384 CA got the P-256 signer")
	}
	dev, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c, err := a.issue(dev.Public(), pkix.Name{CommonName: "d"}, nil, time.Now().Add(-time.Minute), deviceCertNotAfter)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckSignatureFrom(cert); err != nil || c.SignatureAlgorithm != x509.ECDSAWithSHA384 {
		t.Fatalf("%v, %v", c.SignatureAlgorithm, err)
	}
}
