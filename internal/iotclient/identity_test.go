package iotclient

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/failure"
)

// A device's own certificate the server refuses: ConnectOnce fails for
// good, Refusal names the TLS alert, and the message does not send the
// user to the claim's certificate.
func TestConnectOnceRefusedCertificate(t *testing.T) {
	p := newPKI(t)
	aws := startBroker(t, p.serverTLS(t))
	rogue := newCA(t, "rogue device CA")
	certPEM, keyPEM := rogue.issue(t, "device")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	o := p.options(aws.addr, nil)
	o.ClientCert, o.ClaimCertPath, o.ClaimKeyPath = &cert, "", ""
	o.ClientID = "gg_device"
	// As in TestServerRefusesClaimCertIsFatal: room for a reset read
	// before the alert on a busy machine.
	o.ConnectTimeout = 60 * time.Second
	err = ConnectOnce(context.Background(), o)
	if err == nil {
		t.Fatal("ConnectOnce succeeded with a certificate the server does not trust")
	}
	if failure.IsTransient(err) {
		t.Errorf("a refused certificate must be fatal: %v", err)
	}
	if code, alert, ok := Refusal(err); !ok || code != 0 || alert == "" {
		t.Errorf("Refusal(%v) = %#x, %q, %v; want a TLS alert", err, code, alert, ok)
	}
	if msg := err.Error(); !strings.Contains(msg, "the server refused the certificate; check that it is registered and active") || strings.Contains(msg, "claim") {
		t.Errorf("error %q does not say the device certificate was refused, or speaks of the claim", msg)
	}
}

// Refusal tells refusals from everything else.
func TestRefusal(t *testing.T) {
	if _, _, ok := Refusal(nil); ok {
		t.Error("Refusal(nil) reports a refusal")
	}
	if _, _, ok := Refusal(failure.Transient(context.DeadlineExceeded)); ok {
		t.Error("a timeout is taken for a refusal")
	}
	if ReasonName(0x87) != "not authorized" || ReasonName(0x42) != "refused" {
		t.Errorf("ReasonName(0x87) = %q, ReasonName(0x42) = %q", ReasonName(0x87), ReasonName(0x42))
	}
}
