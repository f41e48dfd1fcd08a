package cloudsim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// deviceCertNotAfter is the expiry AWS IoT gives the certificates it issues
// from a CSR; devices that check it see the same date as in the real cloud.
var deviceCertNotAfter = time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC)

// authority is the emulator's one CA: it signs the server certificate, the
// claim certificate and every device certificate, so a single
// AmazonRootCA1.pem lets a device trust the server and the server trust the
// device.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
	pool *x509.CertPool
	leaf *leafSigner // nil: every certificate through crypto/x509
}

func newAuthority(now time.Time) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "fleetprov cloud emulator CA", Organization: []string{"fleetprov"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(30, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return newAuthorityFrom(cert, key), nil
}

func newAuthorityFrom(cert *x509.Certificate, key crypto.Signer) *authority {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &authority{cert: cert, key: key, pool: pool, leaf: newLeafSigner(cert, key)}
}

// loadAuthority reads ca.pem and ca.key from an initialised directory.
func loadAuthority(dir string) (*authority, error) {
	certPath := filepath.Join(dir, fileCA)
	keyPath := filepath.Join(dir, fileCAKey)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	return newAuthorityFrom(cert, key), nil
}

// issue signs a certificate for pub. hosts makes it a server certificate;
// without hosts it is a client certificate.
func (a *authority) issue(pub crypto.PublicKey, subject pkix.Name, hosts []string, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	der, err := a.issueDER(pub, subject, hosts, notBefore, notAfter)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// issueDER is issue without parsing what it signed: a device's
// certificate is only stored and sent, and parsing it back cost every
// provisioning a few tens of microseconds.
func (a *authority) issueDER(pub crypto.PublicKey, subject pkix.Name, hosts []string, notBefore, notAfter time.Time) ([]byte, error) {
	if a.leaf != nil && len(hosts) == 0 {
		der, err := a.leaf.issue(pub, subject, randomSerial(), notBefore, notAfter)
		if err != nil {
			return nil, fmt.Errorf("sign certificate: %w", err)
		}
		return der, nil
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      subject,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if _, isRSA := pub.(*rsa.PublicKey); isRSA {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	if len(hosts) > 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return der, nil
}

// errBadCSR carries the message a device sees in an InvalidPayload rejection.
var errBadCSR = errors.New("invalid certificate signing request")

// parseCSR checks what AWS IoT checks before it signs: a PEM CSR whose
// self-signature verifies and whose key is one AWS accepts.
func parseCSR(pemText string) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found", errBadCSR)
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: PEM block is %q, not CERTIFICATE REQUEST", errBadCSR, block.Type)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify: %v", errBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA key of %d bits; use RSA >= 2048 or EC P-256/P-384/P-521", errBadCSR, k.N.BitLen())
		}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return nil, fmt.Errorf("%w: EC curve %s; use RSA >= 2048 or EC P-256/P-384/P-521", errBadCSR, k.Curve.Params().Name)
		}
	default:
		return nil, fmt.Errorf("%w: key type %T; use RSA >= 2048 or EC P-256/P-384/P-521", errBadCSR, csr.PublicKey)
	}
	return csr, nil
}

// CertificateID is the id AWS IoT gives a certificate: the SHA-256
// fingerprint of its DER encoding, 64 lowercase hex characters.
func CertificateID(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func randomSerial() *big.Int {
	// 128 random bits; rand.Int only fails if the system RNG does, and
	// then nothing else here can work either.
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseKeyPEM(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("key type %T cannot sign", k)
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("unsupported private key encoding")
}
