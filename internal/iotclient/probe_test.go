package iotclient

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/failure"
)

// probeWait bounds what only a stuck test waits for.
const probeWait = 60 * time.Second

// probeServer accepts TLS connections and completes each handshake only
// while active() says so, refusing the client certificate otherwise as
// AWS IoT refuses one that is not ACTIVE.
func probeServer(t *testing.T, p *pki, active func() bool) string {
	t.Helper()
	cfg := p.serverTLS(t)
	cfg.VerifyConnection = func(tls.ConnectionState) error {
		if !active() {
			return errors.New("certificate is not ACTIVE")
		}
		return nil
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(probeWait))
				if c.(*tls.Conn).Handshake() == nil {
					// Like a broker waiting for CONNECT: the probe must
					// not need anything more.
					_, _ = c.Read(make([]byte, 1))
				}
			}()
		}
	}()
	return l.Addr().String()
}

func probeOptions(t *testing.T, p *pki, addr string) ProbeOptions {
	t.Helper()
	block, _ := pem.Decode(p.claimKey)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return ProbeOptions{Endpoint: addr, RootCAPath: p.rootCAPath, CertificatePEM: string(p.claimCert), Key: key.(crypto.Signer), Timeout: probeWait}
}

func TestCertificateActive(t *testing.T) {
	p := newPKI(t)
	var active atomic.Bool
	addr := probeServer(t, p, active.Load)
	o := probeOptions(t, p, addr)

	got, err := CertificateActive(context.Background(), o)
	if err != nil || got {
		t.Fatalf("refused certificate: CertificateActive = %v, %v; want false, nil", got, err)
	}
	active.Store(true)
	got, err = CertificateActive(context.Background(), o)
	if err != nil || !got {
		t.Fatalf("accepted certificate: CertificateActive = %v, %v; want true, nil", got, err)
	}
}

// When the probe cannot reach the cloud it must not guess: a transient
// error, marked as never having reached it.
func TestCertificateActiveCannotTell(t *testing.T) {
	p := newPKI(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	got, err := CertificateActive(context.Background(), probeOptions(t, p, addr))
	if got || err == nil {
		t.Fatalf("nobody listening: CertificateActive = %v, %v; want false and an error", got, err)
	}
	if !failure.IsTransient(err) || !errors.Is(err, failure.ErrUnreached) {
		t.Errorf("err = %v: want transient and unreached", err)
	}
	if !strings.Contains(err.Error(), "cannot tell whether the certificate is active") {
		t.Errorf("err = %q does not say the answer is unknown", err)
	}
}

// A server certificate that does not verify is a config error, reported
// as such, not a verdict on the device certificate.
func TestCertificateActiveWrongRootCA(t *testing.T) {
	p := newPKI(t)
	addr := probeServer(t, p, func() bool { return true })
	o := probeOptions(t, p, addr)
	o.RootCAPath = p.write(t, "other-ca.pem", newCA(t, "another CA").pem)
	got, err := CertificateActive(context.Background(), o)
	if got || err == nil || failure.IsTransient(err) {
		t.Fatalf("CertificateActive = %v, %v; want false and a fatal error", got, err)
	}
}
