package states

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
)

// persistedRun is a fresh run through the local cloud up to and including
// Persist: the device holds its own certificate, key and config.
func persistedRun(t *testing.T, d *device) *engine.Run {
	t.Helper()
	s := session(t)
	r := certifiedRun(t, d, s)
	if err := (&RegisterThing{Session: s}).Run(context.Background(), r); err != nil {
		t.Fatalf("RegisterThing: %v", err)
	}
	if err := (&Persist{}).Run(context.Background(), r); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	return r
}

// refusingDevicePolicy makes the Greengrass device policy allow only
// client ids that go on past the thing name with a dash.
func refusingDevicePolicy(t *testing.T, d *device) {
	t.Helper()
	p := filepath.Join(d.dir, "policies", "GreengrassV2IoTThingPolicy-GreengrassFleetProvisioning.json")
	b := readFile(t, p)
	edited := strings.Replace(string(b), `ThingName}*"`, `ThingName}-*"`, 1)
	if edited == string(b) {
		t.Fatalf("%s has no client/${iot:Connection.Thing.ThingName}* to edit", p)
	}
	if err := os.WriteFile(p, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyConnectsWithTheNewIdentity(t *testing.T) {
	d := newDevice(t, nil)
	d.startCloud(t)
	r := persistedRun(t, d)
	if err := (&Verify{}).Run(context.Background(), r); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !r.Data.VerifiedAt.Equal(testNow) {
		t.Errorf("Data.VerifiedAt = %v, want the run's clock %v", r.Data.VerifiedAt, testNow)
	}
	if r.Data.ClaimRetired != nil {
		t.Errorf("Data.ClaimRetired = %q without retireClaim", r.Data.ClaimRetired)
	}
	for _, p := range []string{d.cfg.ClaimCertPath, d.cfg.ClaimKeyPath} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("claim file without retireClaim: %v", err)
		}
	}
}

// A policy that refuses the thing's client id fails Verify for good, with
// one line naming the client id, the certificate and the template; the
// claim is not retired on an identity that does not work.
func TestVerifyRefusedByPolicy(t *testing.T) {
	d := newDevice(t, nil)
	refusingDevicePolicy(t, d)
	d.startCloud(t)
	r := persistedRun(t, d)
	r.Config.RetireClaim = true
	err := (&Verify{}).Run(context.Background(), r)
	want := `the cloud refused client id "gg_a2_b9_d2_5a_fd_f9" for certificate ` + r.Data.CertificateID +
		` (CONNACK 0x87 not authorized): the policies template GreengrassFleetProvisioningTemplate attaches to it must allow iot:Connect on client/gg_a2_b9_d2_5a_fd_f9`
	if err == nil || err.Error() != want {
		t.Fatalf("Verify = %v\nwant %s", err, want)
	}
	if failure.IsTransient(err) {
		t.Error("a refusal by policy is marked transient: it would be retried for nothing")
	}
	if !r.Data.VerifiedAt.IsZero() || r.Data.ClaimRetired != nil {
		t.Errorf("refused, yet Data says verified at %v, claim retired %q", r.Data.VerifiedAt, r.Data.ClaimRetired)
	}
	for _, p := range []string{d.cfg.ClaimCertPath, d.cfg.ClaimKeyPath} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("claim retired after a refused verification: %v", err)
		}
	}
}

// A certificate the cloud does not know is refused in the TLS handshake:
// fatal, naming the certificate.
func TestVerifyCertificateRefused(t *testing.T) {
	d := newDevice(t, nil)
	d.startCloud(t)
	r := persistedRun(t, d)
	// The device key's certificate, signed by itself: no CA the cloud knows.
	key := parseKey(t, d.cfg.KeyPath)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "stranger"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.cfg.CertPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	err = (&Verify{}).Run(context.Background(), r)
	want := `the cloud refused certificate ` + cloudsim.CertificateID(der) + ` in the TLS handshake (alert "certificate required"): check that it is ACTIVE and that the cloud knows its CA`
	if err == nil || err.Error() != want {
		t.Fatalf("Verify = %v\nwant %s", err, want)
	}
	if failure.IsTransient(err) {
		t.Error("a refused certificate is marked transient")
	}
}

// A certificate deactivated in the cloud (as `aws iot update-certificate
// --new-status INACTIVE` does) is refused in the TLS handshake.
func TestVerifyInactiveCertificate(t *testing.T) {
	d := newDevice(t, nil)
	srv := d.startCloud(t)
	r := persistedRun(t, d)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cloudsim.UpdateCertificate(d.dir, r.Data.CertificateID, cloudsim.StatusInactive); err != nil {
		t.Fatal(err)
	}
	d.startCloud(t)
	err := (&Verify{}).Run(context.Background(), r)
	want := `the cloud refused certificate ` + r.Data.CertificateID + ` in the TLS handshake (alert "bad certificate"): check that it is ACTIVE and that the cloud knows its CA`
	if err == nil || err.Error() != want {
		t.Fatalf("Verify = %v\nwant %s", err, want)
	}
	if failure.IsTransient(err) {
		t.Error("a refused certificate is marked transient")
	}
}

// No cloud to reach: transient, retried by the engine, and not counted
// as an entry that changed anything.
func TestVerifyWithoutNetworkIsTransient(t *testing.T) {
	d := newDevice(t, nil)
	srv := d.startCloud(t)
	r := persistedRun(t, d)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	err := (&Verify{}).Run(context.Background(), r)
	if err == nil || !failure.IsTransient(err) || !errors.Is(err, failure.ErrUnreached) {
		t.Fatalf("Verify with the cloud down = %v, want a transient error that never reached it", err)
	}
	if !strings.HasPrefix(err.Error(), "verify the new certificate: ") {
		t.Errorf("message %q does not say what failed", err)
	}
}

// verify: false connects to nothing.
func TestVerifyOff(t *testing.T) {
	d := newDevice(t, nil)
	srv := d.startCloud(t)
	r := persistedRun(t, d)
	_ = srv.Close()
	r.Config.Verify = false
	if err := (&Verify{}).Run(context.Background(), r); err != nil {
		t.Fatalf("Verify with verify off: %v", err)
	}
	if !r.Data.VerifiedAt.IsZero() {
		t.Errorf("Data.VerifiedAt = %v with verify off", r.Data.VerifiedAt)
	}
}

// retireClaim deletes both claim files once verified; run again (as after
// a crash in the middle), it connects again and finds nothing left to do.
func TestVerifyRetiresTheClaim(t *testing.T) {
	d := newDevice(t, nil)
	d.startCloud(t)
	r := persistedRun(t, d)
	r.Config.RetireClaim = true
	if err := (&Verify{}).Run(context.Background(), r); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := []string{d.cfg.ClaimKeyPath, d.cfg.ClaimCertPath}
	for _, p := range want {
		wantAbsent(t, p)
	}
	if strings.Join(r.Data.ClaimRetired, ",") != strings.Join(want, ",") {
		t.Errorf("Data.ClaimRetired = %q, want %q", r.Data.ClaimRetired, want)
	}
	r.Data.ClaimRetired = nil
	if err := (&Verify{}).Run(context.Background(), r); err != nil {
		t.Fatalf("Verify again: %v", err)
	}
	if strings.Join(r.Data.ClaimRetired, ",") != strings.Join(want, ",") {
		t.Errorf("again: Data.ClaimRetired = %q, want %q", r.Data.ClaimRetired, want)
	}
	// The device's own credentials are untouched.
	cfg, err := config.Load(config.LoadOptions{Path: d.configPath, SkipFileChecks: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckProvisioned(context.Background(), cfg); err != nil {
		t.Errorf("after retirement: %v", err)
	}
}

// A claim path naming one of the device's own files is never deleted.
func TestRetireClaimKeepsTheDeviceFiles(t *testing.T) {
	d := newDevice(t, nil)
	d.startCloud(t)
	r := persistedRun(t, d)
	r.Config.RetireClaim = true
	r.Config.ClaimCertPath = r.Config.CertPath
	err := (&Verify{}).Run(context.Background(), r)
	want := "retire the claim: " + d.cfg.CertPath + " is also " + d.cfg.CertPath + ", which the device needs: point claimCertPath and claimKeyPath at the claim's own files"
	if err == nil || err.Error() != want {
		t.Fatalf("Verify = %v\nwant %s", err, want)
	}
	if _, err := os.Stat(d.cfg.CertPath); err != nil {
		t.Errorf("the device certificate went: %v", err)
	}
	if _, err := os.Stat(d.cfg.ClaimKeyPath); err != nil {
		t.Errorf("the claim key went although retirement was refused: %v", err)
	}
}
