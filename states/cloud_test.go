package states

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
)

// preparedRun is a fresh run that has been through PrepareKey.
func preparedRun(t *testing.T, d *device) *engine.Run {
	t.Helper()
	r := d.run(true)
	if err := (&PrepareKey{}).Run(context.Background(), r); err != nil {
		t.Fatalf("PrepareKey: %v", err)
	}
	return r
}

// certifiedRun is a fresh run that has been through PrepareKey and
// CreateCertificate on s.
func certifiedRun(t *testing.T, d *device, s *Session) *engine.Run {
	t.Helper()
	r := preparedRun(t, d)
	if err := (&CreateCertificate{Session: s}).Run(context.Background(), r); err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	return r
}

func TestCreateCertificateAndRegisterThing(t *testing.T) {
	d := newDevice(t, nil)
	d.startCloud(t)
	s := session(t)
	r := preparedRun(t, d)

	if err := (&CreateCertificate{Session: s}).Run(context.Background(), r); err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	cert := parseCert(t, []byte(r.Data.CertificatePEM))
	if want := cloudsim.CertificateID(cert.Raw); r.Data.CertificateID != want {
		t.Errorf("Data.CertificateID = %q, want the certificate's id %q", r.Data.CertificateID, want)
	}
	if !reflect.DeepEqual(cert.PublicKey, parseKey(t, d.cfg.KeyPath).Public()) {
		t.Error("the certificate is not for the device key")
	}
	if r.Data.OwnershipToken == "" {
		t.Error("Data.OwnershipToken is empty")
	}
	if !r.Data.TokenIssuedAt.Equal(testNow) {
		t.Errorf("Data.TokenIssuedAt = %v, want the run's clock %v", r.Data.TokenIssuedAt, testNow)
	}

	if err := (&RegisterThing{Session: s}).Run(context.Background(), r); err != nil {
		t.Fatalf("RegisterThing: %v", err)
	}
	if r.Data.ThingName != testThing {
		t.Errorf("Data.ThingName = %q, want %q", r.Data.ThingName, testThing)
	}
	if r.Data.TemplateName != cloudsim.DefaultTemplateName {
		t.Errorf("Data.TemplateName = %q, want %q", r.Data.TemplateName, cloudsim.DefaultTemplateName)
	}

	// What `aws iot describe-thing` would show.
	reg, err := cloudsim.ReadRegistry(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	thing := reg.Things[testThing]
	if thing == nil {
		t.Fatalf("the cloud has no thing %s; things: %v", testThing, reg.SortedThings())
	}
	if !reflect.DeepEqual(thing.Principals, []string{r.Data.CertificateID}) {
		t.Errorf("thing principals = %q, want [%s]", thing.Principals, r.Data.CertificateID)
	}
	if c := reg.Certificates[r.Data.CertificateID]; c == nil || c.Status != "ACTIVE" {
		t.Errorf("certificate in the cloud = %+v, want ACTIVE", c)
	}
}

// The emulator always signs the key in the CSR, so a mismatch is made by
// pairing the certificate of one device with the CSR of another.
func TestCertMatchesCSR(t *testing.T) {
	d := newDevice(t, nil)
	d.startCloud(t)
	mine := certifiedRun(t, d, session(t))
	other := preparedRun(t, newDevice(t, nil))

	if err := certMatchesCSR(mine.Data.CertificatePEM, mine.Data.CSRPEM); err != nil {
		t.Errorf("own certificate and CSR: %v", err)
	}
	tests := []struct {
		name           string
		certPEM, csr   string
		want           string
		wantPrefixOnly bool
	}{
		{name: "another key", certPEM: mine.Data.CertificatePEM, csr: other.Data.CSRPEM, want: "its public key is not the device key's"},
		{name: "certificate not PEM", certPEM: "MIIB...", csr: mine.Data.CSRPEM, want: "certificatePem is not PEM"},
		{name: "certificate not DER", certPEM: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", csr: mine.Data.CSRPEM, want: "certificatePem: ", wantPrefixOnly: true},
		{name: "CSR not PEM", certPEM: mine.Data.CertificatePEM, csr: "", want: "journaled CSR is not PEM"},
		{name: "CSR not DER", certPEM: mine.Data.CertificatePEM, csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", want: "journaled CSR: ", wantPrefixOnly: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := certMatchesCSR(tc.certPEM, tc.csr)
			switch {
			case err == nil:
				t.Fatalf("accepted; want %q", tc.want)
			case tc.wantPrefixOnly && !strings.HasPrefix(err.Error(), tc.want):
				t.Errorf("err = %q, want it to start with %q", err, tc.want)
			case !tc.wantPrefixOnly && err.Error() != tc.want:
				t.Errorf("err = %q, want %q", err, tc.want)
			}
		})
	}
}

// countingSession is a Session on the real dialler that counts connections.
func countingSession(t *testing.T) (*Session, *int) {
	n := new(int)
	s := &Session{Dial: func(ctx context.Context, r *engine.Run) (Cloud, error) {
		*n++ // Session.get holds its lock while dialling
		return DialIoT(ctx, r)
	}}
	t.Cleanup(func() { _ = s.Close() })
	return s, n
}

func TestCreateCertificateWithoutCSR(t *testing.T) {
	d := newDevice(t, nil)
	s, dials := countingSession(t)
	err := (&CreateCertificate{Session: s}).Run(context.Background(), d.run(false))
	if err == nil || err.Error() != "no CSR in the journal: run `fleetprov reset` and provision again" {
		t.Fatalf("err = %v", err)
	}
	if *dials != 0 {
		t.Error("connected to the cloud without a CSR to send")
	}
}

func TestCreateCertificateServiceUnavailable(t *testing.T) {
	d := newDevice(t, nil)
	d.startCloud(t, "CreateCertificateFromCsr:reject=503/ServiceUnavailable:times=1")
	s, dials := countingSession(t)
	r := preparedRun(t, d)

	err := (&CreateCertificate{Session: s}).Run(context.Background(), r)
	if !failure.IsTransient(err) {
		t.Fatalf("err = %v, want a transient error", err)
	}
	for _, part := range []string{"statusCode=503", `errorCode="ServiceUnavailable"`, "errorMessage="} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("err = %q lacks %q", err, part)
		}
	}
	if r.Data.CertificateID != "" || r.Data.OwnershipToken != "" {
		t.Errorf("a rejected request filled Data: %+v", r.Data)
	}
	// The engine's retry goes through the same state on a fresh connection.
	if err := (&CreateCertificate{Session: s}).Run(context.Background(), r); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if r.Data.OwnershipToken == "" {
		t.Error("the retry got no token")
	}
	if *dials != 2 {
		t.Errorf("connected %d times, want 2: the retry must not reuse a connection that failed", *dials)
	}
}

func TestRegisterThingTokenRefused(t *testing.T) {
	d := newDevice(t, nil)
	d.startCloud(t, "RegisterThing:reject=400/InvalidCertificateOwnershipToken:times=1")
	s := session(t)
	r := certifiedRun(t, d, s)

	err := (&RegisterThing{Session: s}).Run(context.Background(), r)
	if !errors.Is(err, engine.ErrTokenUnusable) {
		t.Fatalf("err = %v, want ErrTokenUnusable so the engine gets a new certificate", err)
	}
	if failure.IsTransient(err) {
		t.Error("a refused token is retried as it is")
	}
	if !strings.Contains(err.Error(), `errorCode="InvalidCertificateOwnershipToken"`) {
		t.Errorf("err = %q does not say why", err)
	}
	if r.Data.ThingName != "" {
		t.Errorf("Data.ThingName = %q after a refusal", r.Data.ThingName)
	}
	reg, err := cloudsim.ReadRegistry(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Things) != 0 {
		t.Errorf("the cloud registered things after a refusal: %v", reg.SortedThings())
	}
}

func TestRegisterThingWithoutToken(t *testing.T) {
	d := newDevice(t, nil)
	err := (&RegisterThing{Session: session(t)}).Run(context.Background(), d.run(false))
	if !errors.Is(err, engine.ErrTokenUnusable) {
		t.Fatalf("err = %v, want ErrTokenUnusable", err)
	}
	if want := engine.ErrTokenUnusable.Error() + ": none in the journal"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
}

func TestRegisterThingServiceUnavailable(t *testing.T) {
	d := newDevice(t, nil)
	d.startCloud(t, "RegisterThing:reject=503/ServiceUnavailable:times=1")
	s, dials := countingSession(t)
	r := certifiedRun(t, d, s)

	err := (&RegisterThing{Session: s}).Run(context.Background(), r)
	if !failure.IsTransient(err) {
		t.Fatalf("err = %v, want a transient error", err)
	}
	if errors.Is(err, engine.ErrTokenUnusable) {
		t.Error("a 503 throws the certificate away")
	}
	// The token is still good: the retry registers the thing.
	if err := (&RegisterThing{Session: s}).Run(context.Background(), r); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if r.Data.ThingName != testThing {
		t.Errorf("Data.ThingName = %q, want %q", r.Data.ThingName, testThing)
	}
	// One connection for CreateCertificate and the first RegisterThing,
	// a new one for the retry.
	if *dials != 2 {
		t.Errorf("connected %d times, want 2", *dials)
	}
}

func TestRegisterThingUnknownTemplate(t *testing.T) {
	d := newDevice(t, replaceLine(t,
		`templateName: "GreengrassFleetProvisioningTemplate"`,
		`templateName: "NoSuchTemplate"`))
	// Let the claim use any template's topics, so the request reaches the
	// template lookup instead of being refused by the claim policy.
	policy := filepath.Join(d.dir, "policies", "GreengrassProvisioningClaimPolicy.json")
	raw, err := os.ReadFile(policy)
	if err != nil {
		t.Fatal(err)
	}
	wide := strings.ReplaceAll(string(raw), "provisioning-templates/GreengrassFleetProvisioningTemplate/", "provisioning-templates/*/")
	if err := os.WriteFile(policy, []byte(wide), 0o644); err != nil {
		t.Fatal(err)
	}
	d.startCloud(t)
	s := session(t)
	r := certifiedRun(t, d, s)

	err = (&RegisterThing{Session: s}).Run(context.Background(), r)
	if err == nil {
		t.Fatal("RegisterThing with an unknown template succeeded")
	}
	if failure.IsTransient(err) || errors.Is(err, engine.ErrTokenUnusable) {
		t.Errorf("err = %v: want fatal, neither retried nor a new certificate", err)
	}
	want := `RegisterThing rejected: statusCode=404 errorCode="ResourceNotFound" errorMessage="Template NoSuchTemplate not found."`
	if err.Error() != want {
		t.Errorf("err = %s\nwant %s", err, want)
	}
	if r.Data.ThingName != "" || r.Data.TemplateName != "" {
		t.Errorf("Data filled after a rejection: thing %q template %q", r.Data.ThingName, r.Data.TemplateName)
	}
}
