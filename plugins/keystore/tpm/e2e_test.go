package tpm

// End to end: fleetprov run against the local cloud, with the device key
// and the claim key in a software TPM. The test binary plays fleetprov
// (with this key store registered), so a run can be killed with SIGKILL.

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/cli"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
	"github.com/fleetprov/fleetprov/internal/faultpoint"
	"github.com/fleetprov/fleetprov/internal/iotclient"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// envBeCLI makes the test binary behave as fleetprov with the TPM key
// store registered (see TestMain).
const envBeCLI = "FLEETPROV_TEST_BE_CLI"

// envKillAt makes the test binary, as fleetprov, kill itself with SIGKILL
// at a durable write: "POINT:SUFFIX" (a faultpoint name and the end of the
// path written).
const envKillAt = "FLEETPROV_TEST_KILL_AT"

// envOpenTPM makes the test binary open the TPM device it names and print
// the error, if any (see TestDevicePermissionDenied).
const envOpenTPM = "FLEETPROV_TEST_OPEN_TPM"

func TestMain(m *testing.M) {
	if d := os.Getenv(envOpenTPM); d != "" {
		if t, err := openTPM(d); err != nil {
			os.Stdout.WriteString(err.Error() + "\n")
		} else {
			t.Close()
		}
		os.Exit(0)
	}
	if os.Getenv(envBeCLI) == "1" {
		Register()
		if at := os.Getenv(envKillAt); at != "" {
			point, suffix, _ := strings.Cut(at, ":")
			faultpoint.Set(func(_ context.Context, name, detail string) error {
				if name == point && strings.HasSuffix(detail, suffix) {
					_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
					select {}
				}
				return nil
			})
		}
		os.Exit(cli.Build{}.Main(os.Args, os.Stdout, os.Stderr))
	}
	code := m.Run()
	removeBinaries()
	os.Exit(code)
}

// cloud is an initialised local cloud, running, and the device's files
// next to it.
type cloud struct {
	dir, config, journal string
}

func startCloud(t *testing.T, faults ...string) *cloud {
	t.Helper()
	dir, _ := cloudtest.StartWithFaults(t, faults...)
	return &cloud{dir: dir, config: filepath.Join(dir, "config.yaml"), journal: filepath.Join(dir, "device", "journal")}
}

// fleetprov is one fleetprov invocation with the device key at keyURI in
// the software TPM sw.
func fleetprov(sw *softTPM, keyURI string, args ...string) *exec.Cmd {
	self, _ := os.Executable()
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), envBeCLI+"=1", "FLEETPROV_KEY_PATH="+keyURI, "FLEETPROV_RETRY_DEADLINE=60s", EnvDevice+"="+sw.device)
	return cmd
}

func run(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fleetprov %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, out)
	}
	return string(out)
}

func (c *cloud) deviceCert(t *testing.T) *x509.Certificate {
	return cloudtest.ReadCert(t, filepath.Join(c.dir, "device", "credentials", "certificate.pem"))
}

// The device key is made in the TPM and persisted at the handle named;
// the certificate is for the key tpm2_readpublic reads there, and
// Greengrass gets the handle: form.
func TestProvisionWithTPMKey(t *testing.T) {
	sw := startSoftTPM(t)
	c := startCloud(t)
	const uri = "tpm:handle=0x81000010"

	out := run(t, fleetprov(sw, uri, "run", "--config", c.config))
	if !strings.Contains(out, "private key: "+uri+"\n") {
		t.Errorf("run does not name the TPM key:\n%s", out)
	}
	key := sw.publicKey(t, "0x81000010")
	if !equalKeys(c.deviceCert(t).PublicKey, key) {
		t.Error("the certificate's public key is not the one tpm2_readpublic reads at 0x81000010")
	}
	cloudtest.CheckNoDeviceKeyFile(t, c.dir)
	cfg, err := config.Load(config.LoadOptions{Path: c.config, SkipFileChecks: true})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PrivateKeyPath != "handle:0x81000010" {
		t.Errorf("system.privateKeyPath = %q, want handle:0x81000010, as Greengrass lite reads it", cfg.PrivateKeyPath)
	}
	// The device key works over mutual TLS with the local cloud, every
	// signature made in the TPM; another TPM key with the same
	// certificate is refused.
	certPEM, err := os.ReadFile(filepath.Join(c.dir, "device", "credentials", "certificate.pem"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvDevice, sw.device)
	ctx := context.Background()
	for _, tc := range []struct {
		key    string
		active bool
	}{{"handle:0x81000010", true}, {"handle:0x81000011", false}} {
		if !tc.active {
			if _, err := New().CreateKey(ctx, &keystore.CreateKeyRequest{URI: tc.key, Algorithm: keystore.ECDSAP256}); err != nil {
				t.Fatal(err)
			}
		}
		signer, err := New().CreateSigner(ctx, &keystore.CreateSignerRequest{URI: tc.key})
		if err != nil {
			t.Fatal(err)
		}
		ok, err := iotclient.CertificateActive(ctx, iotclient.ProbeOptions{
			Endpoint: cfg.IoTDataHost, Port: cfg.MQTTPort, RootCAPath: cfg.RootCAPath,
			CertificatePEM: string(certPEM), Key: signer, Timeout: time.Minute,
		})
		switch {
		case tc.active && (err != nil || !ok):
			t.Errorf("mutual TLS with the device certificate and its key at %s: accepted %v (%v)", tc.key, ok, err)
		case !tc.active && (ok || err == nil || !strings.Contains(err.Error(), "tls: error decrypting message")):
			// The cloud finds the handshake's signature does not
			// verify with the certificate's key (a decrypt_error alert).
			t.Errorf("mutual TLS with the device certificate and another key at %s: accepted %v (%v), want the signature refused", tc.key, ok, err)
		}
	}

	st := run(t, fleetprov(sw, uri, "status", "--config", c.config))
	if !strings.Contains(st, "key:         "+uri+"\n") {
		t.Errorf("status does not show the key URI:\n%s", st)
	}
	// Provisioned: a second run leaves the TPM alone.
	run(t, fleetprov(sw, uri, "run", "--config", c.config))
	if !equalKeys(sw.publicKey(t, "0x81000010"), key) {
		t.Error("the second run changed the key")
	}
	out = run(t, fleetprov(sw, uri, "reset", "--config", c.config))
	if want := "device key " + uri + " stays in the TPM; the next run evicts it and makes a new one there if fleetprov made it, and stops if it did not\n"; !strings.Contains(out, want) {
		t.Errorf("reset does not say what becomes of the key:\n%s", out)
	}
	if !equalKeys(sw.publicKey(t, "0x81000010"), key) {
		t.Error("reset changed the key")
	}
}

// A device key made by hand, as Greengrass lite's TPM guide does it, and
// named as Greengrass lite names it, is used as it is: the CSR is signed
// there and the certificate is for it.
func TestProvisionWithGreengrassHandleKey(t *testing.T) {
	sw := startSoftTPM(t)
	c := startCloud(t)
	sw.makeKeyByHand(t, "0x81000002")
	key := sw.publicKey(t, "0x81000002")

	run(t, fleetprov(sw, "handle:0x81000002", "run", "--config", c.config))
	if !equalKeys(c.deviceCert(t).PublicKey, key) {
		t.Error("the certificate is not for the key at 0x81000002")
	}
	// Provisioning afresh uses the same key again: fleetprov never
	// replaces a key named by handle:.
	out := run(t, fleetprov(sw, "handle:0x81000002", "reset", "--config", c.config))
	if want := "device key handle:0x81000002 stays in the TPM; the next run uses it again\n"; !strings.Contains(out, want) {
		t.Errorf("reset does not say what becomes of the key:\n%s", out)
	}
	run(t, fleetprov(sw, "handle:0x81000002", "run", "--config", c.config))
	if !equalKeys(sw.publicKey(t, "0x81000002"), key) || !equalKeys(c.deviceCert(t).PublicKey, key) {
		t.Error("provisioning afresh replaced the key at 0x81000002")
	}
}

// --force replaces a key fleetprov made, and stops at one it did not.
func TestForceReplacesOnlyItsOwnKey(t *testing.T) {
	sw := startSoftTPM(t)
	c := startCloud(t)
	const uri = "tpm:handle=0x81000010"
	run(t, fleetprov(sw, uri, "run", "--config", c.config))
	first := sw.publicKey(t, "0x81000010")
	run(t, fleetprov(sw, uri, "run", "--force", "--config", c.config))
	second := sw.publicKey(t, "0x81000010")
	if equalKeys(first, second) {
		t.Error("--force kept fleetprov's old key")
	}
	if !equalKeys(c.deviceCert(t).PublicKey, second) {
		t.Error("the new certificate is not for the new key")
	}

	sw.makeKeyByHand(t, "0x81000011")
	theirs := sw.publicKey(t, "0x81000011")
	const other = "tpm:handle=0x81000011"
	out, err := fleetprov(sw, other, "run", "--force", "--config", c.config).CombinedOutput()
	want := "PrepareKey: tpm key 0x81000011 in " + sw.device + ": the handle holds a key fleetprov did not create, and fleetprov never evicts such a key: name a free handle in the key URI (tpm2_getcap handles-persistent lists those in use), or use that key with handle:0x81000011; create device key"
	if code := cloudtest.ExitCode(err); code != 1 || !strings.Contains(string(out), want) {
		t.Errorf("run --force over a key fleetprov did not make: exit %d, want 1 and %q in:\n%s", code, want, out)
	}
	if !equalKeys(sw.publicKey(t, "0x81000011"), theirs) {
		t.Error("the key fleetprov did not make was replaced")
	}
}

// The claim key lives in the TPM too, at a handle: as Greengrass lite's
// guide puts it there: the claim connection's TLS handshake is signed by
// the TPM, and no claim key file is read.
func TestClaimKeyInTPM(t *testing.T) {
	sw := startSoftTPM(t)
	c := startCloud(t)
	claimFile := filepath.Join(c.dir, "claim.pem.key")
	sw.importKey(t, claimFile, "0x81000000")
	// Out of reach: a run that still read the file would fail.
	if err := os.Rename(claimFile, claimFile+".moved"); err != nil {
		t.Fatal(err)
	}
	const deviceURI = "tpm:handle=0x81000010"
	check := fleetprov(sw, deviceURI, "config", "check", "--config", c.config)
	check.Env = append(check.Env, "FLEETPROV_CLAIM_KEY_PATH=handle:0x81000000")
	run(t, check)
	cmd := fleetprov(sw, deviceURI, "run", "--config", c.config)
	cmd.Env = append(cmd.Env, "FLEETPROV_CLAIM_KEY_PATH=handle:0x81000000")
	run(t, cmd)
	if !equalKeys(c.deviceCert(t).PublicKey, sw.publicKey(t, "0x81000010")) {
		t.Error("the certificate is not for the TPM's device key")
	}
	if n := cloudtest.DeviceCertificates(t, c.dir); n != 1 {
		t.Errorf("the cloud issued %d device certificates, want 1", n)
	}
}

// importKey puts a PEM private key into the TPM at handle, with
// tpm2-tools, as a vendor would put a claim key there.
func (s *softTPM) importKey(t *testing.T, keyFile, handle string) {
	t.Helper()
	dir := t.TempDir()
	f := func(name string) string { return filepath.Join(dir, name) }
	s.tool(t, "tpm2_createprimary", "-C", "o", "-c", f("primary.ctx"))
	s.tool(t, "tpm2_flushcontext", "-t")
	s.tool(t, "tpm2_import", "-C", f("primary.ctx"), "-G", "ecc", "-i", keyFile, "-u", f("claim.pub"), "-r", f("claim.priv"))
	s.tool(t, "tpm2_flushcontext", "-t")
	s.tool(t, "tpm2_load", "-C", f("primary.ctx"), "-u", f("claim.pub"), "-r", f("claim.priv"), "-c", f("claim.ctx"))
	s.tool(t, "tpm2_evictcontrol", "-C", "o", "-c", f("claim.ctx"), handle)
	s.tool(t, "tpm2_flushcontext", "-t")
}

// A run killed while CreateCertificate waits for the cloud, after the key
// was persisted, resumes with that key: the certificate is for it, and the
// TPM holds that one key of fleetprov's. With tpm: alone, the handle the
// first run picked is found again (0x81000002 holds another's key, so it
// is 0x81000003).
func TestResumeKilledInCreateCertificate(t *testing.T) {
	for _, tc := range []struct{ uri, handle string }{
		{"tpm:handle=0x81000010", "0x81000010"},
		{"tpm:", "0x81000003"},
	} {
		t.Run(tc.uri, func(t *testing.T) { resumeKilledInCreateCertificate(t, tc.uri, tc.handle) })
	}
}

func resumeKilledInCreateCertificate(t *testing.T, uri, handle string) {
	sw := startSoftTPM(t)
	sw.makeKeyByHand(t, "0x81000002")
	c := startCloud(t, "CreateCertificateFromCsr:delay=20s:times=1")

	first := fleetprov(sw, uri, "run", "--config", c.config)
	var out1 cloudtest.Output
	first.Stdout, first.Stderr = &out1, &out1
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	cloudtest.WaitForState(t, c.journal, engine.CreateCertificate, &out1)
	time.Sleep(300 * time.Millisecond) // let the request reach the cloud
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	keyBefore := sw.publicKey(t, handle)
	recs, _, err := engine.ReadJournal(c.journal)
	if err != nil || len(recs) == 0 {
		t.Fatalf("journal after the kill: %v", err)
	}
	if got, want := recs[len(recs)-1].Data.KeyURI, "tpm:handle="+handle; got != want {
		t.Errorf("the journal names the key %q, want %q", got, want)
	}

	out2 := run(t, fleetprov(sw, uri, "run", "--config", c.config))
	if !strings.Contains(out2, "resuming at CreateCertificate") {
		t.Errorf("the second run did not resume in CreateCertificate:\n%s", out2)
	}
	if !equalKeys(sw.publicKey(t, handle), keyBefore) {
		t.Error("the resumed run made another key")
	}
	if !equalKeys(c.deviceCert(t).PublicKey, keyBefore) {
		t.Error("the certificate is not for the key the killed run persisted")
	}
	if got, want := strings.Fields(sw.tool(t, "tpm2_getcap", "handles-persistent")), []string{"-", "0x81000002", "-", handle}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("persistent handles after the resumed run: %v, want %v", got, want)
	}
	cfg, err := config.Load(config.LoadOptions{Path: c.config, SkipFileChecks: true})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PrivateKeyPath != "handle:"+handle {
		t.Errorf("system.privateKeyPath = %q, want handle:%s", cfg.PrivateKeyPath, handle)
	}
	cloudtest.CheckNoDeviceKeyFile(t, c.dir)
}

// A run killed in PrepareKey just after the key was persisted, before the
// state was journaled as done (while the CSR is being written), finds the
// key again: tpm: alone by fleetprov's mark.
func TestResumeKilledRightAfterPersisting(t *testing.T) {
	sw := startSoftTPM(t)
	c := startCloud(t)
	first := fleetprov(sw, "tpm:", "run", "--config", c.config)
	first.Env = append(first.Env, envKillAt+"="+faultpoint.FileCreated+":"+config.CSRFileName)
	out, err := first.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the first run was not killed: %v\n%s", err, out)
	}
	key := sw.publicKey(t, "0x81000002")
	recs, _, err := engine.ReadJournal(c.journal)
	if err != nil || len(recs) == 0 || recs[len(recs)-1].State != engine.PrepareKey {
		t.Fatalf("the first run was not killed inside PrepareKey (journal: %v, %d records)", err, len(recs))
	}

	run(t, fleetprov(sw, "tpm:", "run", "--config", c.config))
	if !equalKeys(sw.publicKey(t, "0x81000002"), key) {
		t.Error("the second run replaced the key")
	}
	if !equalKeys(c.deviceCert(t).PublicKey, key) {
		t.Error("the certificate is not for the key the killed run persisted")
	}
	if got := strings.Fields(sw.tool(t, "tpm2_getcap", "handles-persistent")); strings.Join(got, " ") != "- 0x81000002" {
		t.Errorf("persistent handles: %v, want only 0x81000002", got)
	}
}

// config check says which handle tpm: alone will use.
func TestConfigCheckShowsTheHandle(t *testing.T) {
	sw := startSoftTPM(t)
	c := startCloud(t)
	out := run(t, fleetprov(sw, "tpm:", "config", "check", "--config", c.config))
	if !strings.Contains(out, " at tpm:handle=0x81000002, ") {
		t.Errorf("config check does not name the handle the key will be made at:\n%s", out)
	}
	if got := strings.TrimSpace(sw.tool(t, "tpm2_getcap", "handles-persistent")); got != "" {
		t.Errorf("config check persisted something: %s", got)
	}
}

// tpm: alone, once provisioned: the next run finds the certificate is for
// fleetprov's key in the TPM and stops there; with that key gone, it says
// the device is not what the config claims.
func TestProvisionedWithTPMAlone(t *testing.T) {
	sw := startSoftTPM(t)
	c := startCloud(t)
	run(t, fleetprov(sw, "tpm:", "run", "--config", c.config))
	out := run(t, fleetprov(sw, "tpm:", "run", "--config", c.config))
	if strings.Contains(out, "private key:") {
		t.Errorf("the second run provisioned again:\n%s", out)
	}
	sw.tool(t, "tpm2_evictcontrol", "-C", "o", "-c", "0x81000002")
	b, err := fleetprov(sw, "tpm:", "run", "--config", c.config).CombinedOutput()
	want := "tpm key 0x81000002 (tpm: settles on it) in " + sw.device + ": key not found: run `fleetprov reset`, then `fleetprov run` to provision afresh"
	if code := cloudtest.ExitCode(err); code != 1 || !strings.Contains(string(b), want) {
		t.Errorf("run with the key evicted: exit %d, want 1 and %q in:\n%s", code, want, b)
	}
}

// An RSA-2048 device key in the TPM: the CSR and the certificate are for
// it.
func TestProvisionWithRSAKey(t *testing.T) {
	sw := startSoftTPM(t)
	c := startCloud(t)
	cmd := fleetprov(sw, "tpm:handle=0x81000010", "run", "--config", c.config)
	cmd.Env = append(cmd.Env, "FLEETPROV_KEY_ALGORITHM=rsa-2048")
	run(t, cmd)
	key := sw.publicKey(t, "0x81000010")
	if _, ok := key.(*rsa.PublicKey); !ok {
		t.Fatalf("the key at 0x81000010 is %T, want RSA", key)
	}
	if !equalKeys(c.deviceCert(t).PublicKey, key) {
		t.Error("the certificate is not for the TPM's RSA key")
	}
}
