package iotclient

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Limits on what the cloud may send. An answer is refused, whole, when one
// field breaks them: nothing of it is journaled, written or printed raw.
const (
	// MaxPayload is AWS IoT's cap on a message payload (128 KB).
	MaxPayload = 128 * 1024
	// MaxPacketSize is the CONNECT Maximum Packet Size the client
	// announces: a largest payload plus room for the fixed header, the
	// topic (at most a few hundred bytes on the fleet provisioning
	// topics) and properties. A broker must not send a larger packet; one
	// that does is cut off before the packet is read.
	MaxPacketSize = MaxPayload + 4*1024

	maxCertificatePEM   = 16 * 1024 // a certificate with a 4096-bit RSA key is under 3 KB
	maxPrivateKeyPEM    = 16 * 1024
	maxOwnershipToken   = 4 * 1024 // AWS's tokens are under 1 KB
	maxDeviceConfigKeys = 64
	maxDeviceConfigKey  = 128
	maxDeviceConfigVal  = 4 * 1024
	maxErrorCode        = 128
	maxErrorMessage     = 1024
	// quoteLimit bounds how much of a refused value an error shows.
	quoteLimit = 64
	// clockSkew is how far the device clock may be from the cloud's
	// before a fresh certificate looks not yet valid (or just expired).
	clockSkew = 5 * time.Minute
)

// thingNameRE and a length of at most 128 are AWS's rule for thing
// names (validThingName). It also keeps path separators, MQTT wildcards,
// control characters and YAML syntax out of file names, topics,
// config.yaml and the terminal. The lengths are checked apart from the
// patterns because a bounded repetition ({1,128}) compiles into a program
// as many times larger, built at every start of every command.
var thingNameRE = regexp.MustCompile(`^[a-zA-Z0-9:_-]+$`)

func validThingName(s string) bool { return len(s) <= 128 && thingNameRE.MatchString(s) }

// certificateIDRE: AWS certificate ids are the lowercase hex SHA-256 of
// the certificate's DER, 64 digits (validCertificateID).
var certificateIDRE = regexp.MustCompile(`^[0-9a-f]+$`)

func validCertificateID(s string) bool { return len(s) == 64 && certificateIDRE.MatchString(s) }

// quoteTrunc quotes s for an error message, escaping control characters
// and cutting it at n bytes, so that a hostile value can neither forge
// output nor flood it.
func quoteTrunc(s string, n int) string {
	if len(s) <= n {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:n], len(s))
}

// truncate cuts s to at most n bytes, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("... (%d bytes)", len(s))
}

// certCheck is what an issued certificate is checked against.
type certCheck struct {
	now func() time.Time
	// key is the public key the certificate must be for: the CSR's, or
	// the key sent with the certificate.
	key     crypto.PublicKey
	keyName string // how an error names key
}

// validateCertificate checks an accepted CreateCertificateFromCsr or
// CreateKeysAndCertificate answer field by field; it returns the name of
// the field at fault and why, or "".
func validateCertificate(r *CertificateResult, cc certCheck) string {
	if len(r.CertificatePEM) > maxCertificatePEM {
		return fmt.Sprintf("certificatePem is %d bytes, over the %d-byte limit", len(r.CertificatePEM), maxCertificatePEM)
	}
	blk, rest := pem.Decode([]byte(r.CertificatePEM))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return "certificatePem is not a PEM certificate"
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return "certificatePem holds more than one PEM block; want exactly one certificate"
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return fmt.Sprintf("certificatePem does not parse: %v", err)
	}
	now := cc.now()
	if now.Add(clockSkew).Before(cert.NotBefore) {
		return fmt.Sprintf("certificatePem is not valid before %s (device clock %s)", cert.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.Add(-clockSkew).After(cert.NotAfter) {
		return fmt.Sprintf("certificatePem expired at %s (device clock %s)", cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cc.key) {
		return "certificatePem is not for " + cc.keyName + " (their public keys differ)"
	}
	sum := sha256.Sum256(cert.Raw)
	if want := hex.EncodeToString(sum[:]); r.CertificateID != want {
		if !validCertificateID(r.CertificateID) {
			return fmt.Sprintf("certificateId %s is not 64 lowercase hex digits", quoteTrunc(r.CertificateID, quoteLimit))
		}
		return fmt.Sprintf("certificateId %s is not the certificate's SHA-256 (%s)", quoteTrunc(r.CertificateID, quoteLimit), want)
	}
	if len(r.OwnershipToken) > maxOwnershipToken {
		return fmt.Sprintf("certificateOwnershipToken is %d bytes, over the %d-byte limit", len(r.OwnershipToken), maxOwnershipToken)
	}
	return ""
}

// validateRegistration checks an accepted RegisterThing answer.
func validateRegistration(p *registerThingAccepted) string {
	if !validThingName(p.ThingName) {
		return fmt.Sprintf("thingName %s is not 1-128 characters of a-z A-Z 0-9 : _ -", quoteTrunc(p.ThingName, quoteLimit))
	}
	if n := len(p.DeviceConfiguration); n > maxDeviceConfigKeys {
		return fmt.Sprintf("deviceConfiguration has %d keys, over the limit of %d", n, maxDeviceConfigKeys)
	}
	for k, v := range p.DeviceConfiguration {
		if k == "" || len(k) > maxDeviceConfigKey {
			return fmt.Sprintf("deviceConfiguration key %s is not 1-%d bytes", quoteTrunc(k, quoteLimit), maxDeviceConfigKey)
		}
		if strings.ContainsFunc(k, isControl) {
			return fmt.Sprintf("deviceConfiguration key %s holds a control character", quoteTrunc(k, quoteLimit))
		}
		if len(v) > maxDeviceConfigVal {
			return fmt.Sprintf("deviceConfiguration value of %s is %d bytes, over the %d-byte limit", quoteTrunc(k, quoteLimit), len(v), maxDeviceConfigVal)
		}
	}
	return ""
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }

// csrPublicKey is the key a CSR asks a certificate for.
func csrPublicKey(csrPEM string) (crypto.PublicKey, error) {
	blk, _ := pem.Decode([]byte(csrPEM))
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("the CSR is not a PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the CSR does not parse: %w", err)
	}
	return csr.PublicKey, nil
}

// privateKeyPublic is the public half of a PEM private key from the cloud.
// Errors never quote the key.
func privateKeyPublic(keyPEM string) (crypto.PublicKey, error) {
	blk, rest := pem.Decode([]byte(keyPEM))
	if blk == nil {
		return nil, fmt.Errorf("privateKey is not a PEM private key")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("privateKey holds more than one PEM block; want exactly one key")
	}
	var (
		key any
		err error
	)
	switch blk.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("privateKey (%s) does not parse", blk.Type)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("privateKey (%s) is not a signing key", blk.Type)
	}
	return s.Public(), nil
}
