package states

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/failure"
)

// certStatuses is what `aws iot list-certificates` would show: the status
// of every device certificate (the claim left out).
func certStatuses(t *testing.T, dir string) map[string]string {
	t.Helper()
	reg, err := cloudsim.ReadRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for id, c := range reg.Certificates {
		if !c.Claim {
			out[id] = c.Status
		}
	}
	return out
}

// A registration went through but its answer never arrived, and the token
// has since grown too old (the engine then forgets the certificate): asking
// for another certificate would leave the thing with two ACTIVE ones.
// CreateCertificate finds the old one ACTIVE and stops, asking nothing,
// until an operator deactivates it.
func TestPriorCertificateActiveStops(t *testing.T) {
	d := newDevice(t, nil)
	srv := d.startCloud(t)
	s := session(t)
	r := certifiedRun(t, d, s)
	if err := (&RegisterThing{Session: s}).Run(context.Background(), r); err != nil {
		t.Fatalf("RegisterThing: %v", err)
	}
	prior := r.Data.CertificateID
	r.Data.ThingName, r.Data.DeviceConfiguration = "", nil // the answer that was lost
	r.Data.ForgetCertificate()
	if r.Data.PriorCertificateID != prior {
		t.Fatalf("ForgetCertificate kept %q as the prior certificate, want %q", r.Data.PriorCertificateID, prior)
	}

	err := (&CreateCertificate{Session: s}).Run(context.Background(), r)
	if !errors.Is(err, ErrPriorCertificateActive) || failure.IsTransient(err) {
		t.Fatalf("err = %v, want a fatal ErrPriorCertificateActive", err)
	}
	want := "certificate " + prior + " is ACTIVE in the cloud: the thing was registered but the answer never arrived, and another certificate would make two ACTIVE ones; deactivate it (aws iot update-certificate --certificate-id " + prior + " --new-status INACTIVE, or fleetprov cloud update-certificate on the local cloud), then run again"
	if err.Error() != want {
		t.Errorf("err =\n%s\nwant\n%s", err, want)
	}
	if got := certStatuses(t, d.dir); len(got) != 1 || got[prior] != cloudsim.StatusActive {
		t.Errorf("certificates in the cloud: %v, want only %s ACTIVE (nothing asked)", got, prior)
	}
	if r.Data.PriorCertificateID != prior || r.Data.CertificateID != "" {
		t.Errorf("after the refusal Data has prior %q, certificate %q: the next run must check again", r.Data.PriorCertificateID, r.Data.CertificateID)
	}

	// The operator deactivates it; the emulator must be stopped for that.
	if _, err := cloudsim.UpdateCertificate(d.dir, prior, cloudsim.StatusInactive); !errors.Is(err, cloudsim.ErrDirInUse) {
		t.Fatalf("UpdateCertificate while serving: %v, want ErrDirInUse", err)
	}
	s.drop()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if old, err := cloudsim.UpdateCertificate(d.dir, prior, cloudsim.StatusInactive); err != nil || old != cloudsim.StatusActive {
		t.Fatalf("UpdateCertificate = %q, %v", old, err)
	}
	d.startCloud(t)
	if err := (&CreateCertificate{Session: s}).Run(context.Background(), r); err != nil {
		t.Fatalf("CreateCertificate after deactivation: %v", err)
	}
	if r.Data.PriorCertificateID != "" || r.Data.PriorCertificatePEM != "" {
		t.Errorf("prior certificate %q still journaled after it was found INACTIVE", r.Data.PriorCertificateID)
	}
	got := certStatuses(t, d.dir)
	if len(got) != 2 || got[prior] != cloudsim.StatusInactive || got[r.Data.CertificateID] != cloudsim.StatusPendingActivation {
		t.Errorf("certificates in the cloud: %v, want %s INACTIVE and the new %s pending", got, prior, r.Data.CertificateID)
	}
}

// The common case: the registration never went through (the device lost
// power before its request left), so the old certificate is still pending
// and the run asks for a new one at once.
func TestPriorCertificatePendingIsReplaced(t *testing.T) {
	d := newDevice(t, nil)
	d.startCloud(t)
	s := session(t)
	r := certifiedRun(t, d, s)
	prior := r.Data.CertificateID
	r.Data.ForgetCertificate()
	if err := (&CreateCertificate{Session: s}).Run(context.Background(), r); err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	if r.Data.PriorCertificateID != "" || r.Data.CertificateID == "" || r.Data.CertificateID == prior {
		t.Errorf("Data: prior %q, certificate %q; want no prior and a new certificate", r.Data.PriorCertificateID, r.Data.CertificateID)
	}
	if err := (&RegisterThing{Session: s}).Run(context.Background(), r); err != nil {
		t.Fatalf("RegisterThing: %v", err)
	}
	got := certStatuses(t, d.dir)
	if got[prior] != cloudsim.StatusPendingActivation || got[r.Data.CertificateID] != cloudsim.StatusActive {
		t.Errorf("certificates in the cloud: %v, want %s pending and %s ACTIVE", got, prior, r.Data.CertificateID)
	}
}

// With the cloud out of reach the run cannot tell, so it neither stops for
// good nor asks: a transient error, and the prior certificate stays
// journaled for the next try.
func TestPriorCertificateCannotTell(t *testing.T) {
	d := newDevice(t, nil)
	srv := d.startCloud(t)
	s := session(t)
	r := certifiedRun(t, d, s)
	prior := r.Data.CertificateID
	r.Data.ForgetCertificate()
	s.drop()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	err := (&CreateCertificate{Session: s}).Run(context.Background(), r)
	if !failure.IsTransient(err) || !errors.Is(err, failure.ErrUnreached) {
		t.Fatalf("err = %v, want transient and unreached", err)
	}
	if !strings.HasPrefix(err.Error(), "checking whether certificate "+prior+", given up on after its registration went unanswered, is active: ") {
		t.Errorf("err = %q does not name the certificate being checked", err)
	}
	if r.Data.PriorCertificateID != prior {
		t.Errorf("prior certificate %q, want %q kept", r.Data.PriorCertificateID, prior)
	}
}

// In the create-keys mode a run that found the prior certificate not
// ACTIVE, stored a new key and was killed before journaling resumes with a
// key that is no longer the prior certificate's; it cannot probe with it,
// and need not: its token is spent.
func TestPriorCertificateKeyReplaced(t *testing.T) {
	d := newDevice(t, nil)
	d.startCloud(t)
	s := session(t)
	od := newDevice(t, nil)
	od.startCloud(t)
	other := certifiedRun(t, od, session(t)) // another device's certificate
	r := preparedRun(t, d)
	r.Data.PriorCertificateID, r.Data.PriorCertificatePEM = other.Data.CertificateID, other.Data.CertificatePEM
	if err := (&CreateCertificate{Session: s}).Run(context.Background(), r); err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	if r.Data.PriorCertificateID != "" {
		t.Errorf("prior certificate %q kept", r.Data.PriorCertificateID)
	}
}
