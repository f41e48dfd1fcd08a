package cloudsim

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"strings"
	"testing"
	"time"
)

// The remembered chain of a claim certificate still answers as crypto/tls
// would: refused before it is valid and after it expires, and a
// certificate of another CA, or one not for client authentication, is
// refused whatever was remembered before.
func TestClientChainsVerifyAsTLSWould(t *testing.T) {
	now := time.Now()
	ca, err := newAuthority(now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := newAuthority(now)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(a *authority, hosts []string) *x509.Certificate {
		t.Helper()
		c, err := a.issue(newKey(t).Public(), pkix.Name{CommonName: "claim"}, hosts, now.Add(-time.Minute), now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	claim := issue(ca, nil)
	cc := newClientChains(ca.pool)
	for i := range 3 { // the first verifies, the others are remembered
		if err := cc.verify([]*x509.Certificate{claim}, now); err != nil {
			t.Fatalf("claim, handshake %d: %v", i, err)
		}
	}
	var cve *tls.CertificateVerificationError
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		at   time.Time
		want string
	}{
		{"claim after it expired", claim, now.Add(2 * time.Hour), "expired"},
		{"claim before it is valid", claim, now.Add(-time.Hour), "not yet valid"},
		{"another CA's certificate", issue(other, nil), now, "unknown authority"},
		{"a server certificate of the same CA", issue(ca, []string{"localhost"}), now, "incompatible key usage"},
	} {
		err := cc.verify([]*x509.Certificate{tc.cert}, tc.at)
		if !errors.As(err, &cve) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want crypto/tls's verification error saying %q", tc.name, err, tc.want)
		}
	}
	if err := cc.verify(nil, now); !errors.Is(err, errNoClientCertificate) {
		t.Errorf("no certificate: %v", err)
	}
	// A stream of certificates seen once each (devices connecting with
	// their new certificates) neither grows the memory without bound nor
	// pushes out the claim that comes between them.
	for i := range 3 * chainCacheSize {
		c := issue(ca, nil)
		if err := cc.verify([]*x509.Certificate{c}, now); err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			if err := cc.verify([]*x509.Certificate{claim}, now); err != nil {
				t.Fatal(err)
			}
		}
	}
	cc.mu.Lock()
	n := len(cc.recent) + len(cc.older)
	_, inRecent := cc.recent[string(claim.Raw)]
	_, inOlder := cc.older[string(claim.Raw)]
	claimKept := inRecent || inOlder
	cc.mu.Unlock()
	if n > 2*chainCacheSize {
		t.Errorf("%d leaves remembered, want at most %d", n, 2*chainCacheSize)
	}
	if !claimKept {
		t.Error("the claim certificate in use was forgotten")
	}
}
