package cloudsim

import (
	"crypto/tls"
	"crypto/x509"
	"sync"
	"time"
)

// clientChains verifies a client certificate against the emulator's CA
// as crypto/tls would (RequireAndVerifyClientCert), remembering the leaves
// that verified. Every device of a fleet presents the same claim
// certificate, and verifying its chain anew in every handshake was 6% of
// serve's CPU per provisioning (an ECDSA verification and the chain
// building around it) for an answer that cannot change: the CA is fixed
// for the life of the server. What can change is checked every time: the
// certificate's validity period here, and its status in the registry
// (refuseInactive).
type clientChains struct {
	roots *x509.CertPool

	mu sync.Mutex
	// Two generations bound the memory: a leaf found in older moves to
	// recent, and once recent holds chainCacheSize, older is dropped and
	// recent becomes older. A claim certificate in use stays; the device
	// certificates of --verify connections, each seen once, pass through.
	recent, older map[string]validity // by the leaf's DER
}

type validity struct{ notBefore, notAfter time.Time }

// chainCacheSize is the number of leaves per generation: far more than
// the claim certificates a fleet shares, few enough to cost under 1 MiB.
const chainCacheSize = 512

func newClientChains(roots *x509.CertPool) *clientChains {
	return &clientChains{roots: roots, recent: map[string]validity{}, older: map[string]validity{}}
}

// verify checks certs (the client's chain, leaf first) at now. Only a lone
// leaf is remembered: a chain with intermediates is verified every time.
func (c *clientChains) verify(certs []*x509.Certificate, now time.Time) error {
	if len(certs) == 0 {
		return errNoClientCertificate
	}
	leaf := certs[0]
	key := string(leaf.Raw)
	if len(certs) == 1 {
		c.mu.Lock()
		v, ok := c.recent[key]
		if !ok {
			if v, ok = c.older[key]; ok {
				c.remember(key, v)
			}
		}
		c.mu.Unlock()
		if ok && !now.Before(v.notBefore) && !now.After(v.notAfter) {
			return nil
		}
	}
	opts := x509.VerifyOptions{
		Roots:         c.roots,
		CurrentTime:   now,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, ic := range certs[1:] {
		opts.Intermediates.AddCert(ic)
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		// The error crypto/tls itself returns for a chain it refuses.
		return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
	}
	if len(certs) == 1 {
		// Valid while every certificate of the chain is.
		v := validity{leaf.NotBefore, leaf.NotAfter}
		for _, ca := range chains[0][1:] {
			if ca.NotBefore.After(v.notBefore) {
				v.notBefore = ca.NotBefore
			}
			if ca.NotAfter.Before(v.notAfter) {
				v.notAfter = ca.NotAfter
			}
		}
		c.mu.Lock()
		c.remember(key, v)
		c.mu.Unlock()
	}
	return nil
}

// remember adds a verified leaf to the recent generation. c.mu is held.
func (c *clientChains) remember(key string, v validity) {
	if len(c.recent) >= chainCacheSize {
		c.older, c.recent = c.recent, make(map[string]validity, chainCacheSize)
	}
	c.recent[key] = v
}
