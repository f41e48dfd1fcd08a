//go:build cgo

package pkcs11

// End to end: fleetprov run, with the device key in a SoftHSM2 token,
// against the local cloud. The test binary plays fleetprov (with this key
// store registered in-process), so a run can be killed with SIGKILL.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
	"github.com/fleetprov/fleetprov/internal/plugintest"
	"github.com/fleetprov/fleetprov/internal/softhsmtest"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// envBeCLI makes the test binary behave as fleetprov with the pkcs11 key
// store registered (see TestMain).
const envBeCLI = "FLEETPROV_TEST_BE_CLI"

// cloud is an initialised local cloud, running, and the device's files
// next to it.
type cloud struct {
	dir, config, journal string
	srv                  *cloudsim.Server
}

func startCloud(t *testing.T, faults ...string) *cloud {
	t.Helper()
	dir, srv := cloudtest.StartWithFaults(t, faults...)
	return &cloud{dir: dir, config: filepath.Join(dir, "config.yaml"), journal: filepath.Join(dir, "device", "journal"), srv: srv}
}

// fleetprov returns the command for one fleetprov invocation with the
// device key at keyURI.
func fleetprov(keyURI string, args ...string) *exec.Cmd {
	self, _ := os.Executable()
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), envBeCLI+"=1", "FLEETPROV_KEY_PATH="+keyURI, "FLEETPROV_RETRY_DEADLINE=60s")
	return cmd
}

func TestProvisionWithTokenKey(t *testing.T) {
	tk := newToken(t)
	c := startCloud(t)
	uri := tk.uri("device", []byte{0x01})

	out, err := fleetprov(uri, "run", "--config", c.config).CombinedOutput()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "private key: "+uri) {
		t.Errorf("run does not name the token key:\n%s", out)
	}
	tokenKey := tokenPublicKey(t, uri)
	cert := cloudtest.ReadCert(t, filepath.Join(c.dir, "device", "credentials", "certificate.pem"))
	if !reflect.DeepEqual(cert.PublicKey, tokenKey) {
		t.Error("the certificate's public key is not the token's key")
	}
	cloudtest.CheckNoDeviceKeyFile(t, c.dir)

	// Greengrass finds the key by the URI in system.privateKeyPath.
	cfg, err := config.Load(config.LoadOptions{Path: c.config, SkipFileChecks: true})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PrivateKeyPath != uri {
		t.Errorf("system.privateKeyPath = %q, want %q", cfg.PrivateKeyPath, uri)
	}

	st, err := fleetprov(uri, "status", "--config", c.config).CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, st)
	}
	if !strings.Contains(string(st), "key:         "+uri+"\n") {
		t.Errorf("status does not show the pkcs11: URI:\n%s", st)
	}
	for _, f := range []string{c.journal, c.config} {
		if b, _ := os.ReadFile(f); bytes.Contains(b, []byte(testPIN)) {
			t.Errorf("%s holds the PIN", f)
		}
	}
	if bytes.Contains(out, []byte(testPIN)) || bytes.Contains(st, []byte(testPIN)) {
		t.Error("output shows the PIN")
	}

	// A second run finds the device provisioned and leaves the token alone.
	again, err := fleetprov(uri, "run", "--config", c.config).CombinedOutput()
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, again)
	}
	if !reflect.DeepEqual(tokenPublicKey(t, uri), tokenKey) {
		t.Error("the token's key changed")
	}
}

// The claim key may live in the token too: the claim connection's TLS
// handshake is signed there, and no key file is read for it.
func TestClaimKeyInToken(t *testing.T) {
	for _, viaPlugin := range []bool{false, true} {
		name := map[bool]string{false: "in-process", true: "plugin"}[viaPlugin]
		t.Run(name, func(t *testing.T) { claimKeyInToken(t, viaPlugin) })
	}
}

func claimKeyInToken(t *testing.T, viaPlugin bool) {
	tk := newToken(t)
	c := startCloud(t)
	claimFile := filepath.Join(c.dir, "claim.pem.key")
	if err := softhsmtest.ImportKey(softhsmConf, tk.label, testPIN, claimFile, "claim", "c1"); err != nil {
		t.Fatal(err)
	}
	// Out of reach: a run that still read the file would fail.
	if err := os.Rename(claimFile, claimFile+".moved"); err != nil {
		t.Fatal(err)
	}
	claimURI := tk.uri("claim", []byte{0xc1})
	deviceURI := tk.uri("device", nil)
	claimKey, deviceKey, cli := claimURI, deviceURI, fleetprov
	if viaPlugin {
		addPlugin(t, c)
		claimKey, deviceKey, cli = "plugin:pkcs11/"+claimURI, "plugin:pkcs11/"+deviceURI, plainFleetprov
	}

	check := cli(deviceKey, "config", "check", "--config", c.config)
	check.Env = append(check.Env, "FLEETPROV_CLAIM_KEY_PATH="+claimKey)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("config check: %v\n%s", err, out)
	}
	run := cli(deviceKey, "run", "--config", c.config)
	run.Env = append(run.Env, "FLEETPROV_CLAIM_KEY_PATH="+claimKey)
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("run with the claim key in the token: %v\n%s", err, out)
	}
	cert := cloudtest.ReadCert(t, filepath.Join(c.dir, "device", "credentials", "certificate.pem"))
	if !reflect.DeepEqual(cert.PublicKey, tokenPublicKey(t, deviceURI)) {
		t.Error("the certificate is not for the token's device key")
	}
	if counts := cloudtest.DeviceCertificates(t, c.dir); counts != 1 {
		t.Errorf("cloud holds %d device certificates, want 1", counts)
	}
}

// A claim key in the token that is not the claim certificate's is named as
// such, rather than showing up as a refused handshake.
func TestClaimKeyInTokenMismatch(t *testing.T) {
	tk := newToken(t)
	c := startCloud(t)
	other := tk.uri("other", nil)
	s := New()
	if _, err := s.CreateKey(context.Background(), &keystore.CreateKeyRequest{URI: other}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	run := fleetprov(tk.uri("device", nil), "run", "--config", c.config)
	run.Env = append(run.Env, "FLEETPROV_CLAIM_KEY_PATH="+other)
	out, err := run.CombinedOutput()
	want := "iotclient: claim certificate " + filepath.Join(c.dir, "claim.pem.crt") + " is not for the claim key in the key store (their public keys differ): use the key the claim certificate was issued for"
	if code := cloudtest.ExitCode(err); code != 1 || !strings.Contains(string(out), want) {
		t.Errorf("exit %d, want 1 and %q in:\n%s", code, want, out)
	}
}

// A run killed while CreateCertificate waits for the cloud resumes with the
// key already in the token: the certificate is for that key, and the token
// holds one device key. The store is in-process, or the plugin binary.
func TestResumeKilledInCreateCertificate(t *testing.T) {
	for _, viaPlugin := range []bool{false, true} {
		name := map[bool]string{false: "in-process", true: "plugin"}[viaPlugin]
		t.Run(name, func(t *testing.T) { resumeKilledInCreateCertificate(t, viaPlugin) })
	}
}

func resumeKilledInCreateCertificate(t *testing.T, viaPlugin bool) {
	tk := newToken(t)
	c := startCloud(t, "CreateCertificateFromCsr:delay=20s:times=1")
	uri := tk.uri("device", nil)
	keyURI, cli := uri, fleetprov
	if viaPlugin {
		addPlugin(t, c)
		keyURI, cli = "plugin:pkcs11/"+uri, plainFleetprov
	}

	first := cli(keyURI, "run", "--config", c.config)
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
	keyBefore := tokenPublicKey(t, uri)
	recs, _, err := engine.ReadJournal(c.journal)
	if err != nil || len(recs) == 0 {
		t.Fatalf("journal after the kill: %v", err)
	}
	if last := recs[len(recs)-1]; last.State != engine.CreateCertificate || csrKey(t, last.Data.CSRPEM) == nil || !reflect.DeepEqual(csrKey(t, last.Data.CSRPEM), keyBefore) {
		t.Fatalf("the journaled CSR is not for the token's key (last state %s)", last.State)
	}

	out2, err := cli(keyURI, "run", "--config", c.config).CombinedOutput()
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, out2)
	}
	if !strings.Contains(string(out2), "resuming at CreateCertificate") {
		t.Errorf("second run did not resume in CreateCertificate:\n%s", out2)
	}
	if !reflect.DeepEqual(tokenPublicKey(t, uri), keyBefore) {
		t.Error("the resumed run made another key")
	}
	cert := cloudtest.ReadCert(t, filepath.Join(c.dir, "device", "credentials", "certificate.pem"))
	if !reflect.DeepEqual(cert.PublicKey, keyBefore) {
		t.Error("the certificate is not for the token's key")
	}
	s := New()
	defer s.Close()
	u, ctx, err := s.open(uri)
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := ctx.FindKeyPairs(nil, []byte(u.Object)); err != nil || len(keys) != 1 {
		t.Errorf("token holds %d keys labelled %s (%v), want 1", len(keys), u.Object, err)
	}
	cloudtest.CheckNoDeviceKeyFile(t, c.dir)
	if viaPlugin {
		// The killed run's plugin ends on its own once its parent is gone.
		deadline := time.Now().Add(60 * time.Second)
		for len(plugintest.Processes(pluginBinary(t))) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if pids := plugintest.Processes(pluginBinary(t)); len(pids) > 0 {
			t.Errorf("plugin processes %v still run", pids)
		}
	}
}

// A fresh run (after reset) never replaces a key it finds in the token,
// and says what to do; a bad URI or missing PIN file is a config error.
func TestTokenKeyErrorsFromTheCLI(t *testing.T) {
	tk := newToken(t)
	c := startCloud(t)
	uri := tk.uri("device", nil)
	if out, err := fleetprov(uri, "run", "--config", c.config).CombinedOutput(); err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	out, err := fleetprov(uri, "reset", "--config", c.config).CombinedOutput()
	if err != nil {
		t.Fatalf("reset: %v\n%s", err, out)
	}
	if want := "device key " + uri + " stays in its token; the next run will not replace it: delete it there, or name another object in keyPath\n"; !strings.Contains(string(out), want) {
		t.Errorf("reset does not say the token key stays:\n%s", out)
	}
	key := tokenPublicKey(t, uri)
	out, err = fleetprov(uri, "run", "--config", c.config).CombinedOutput()
	want := `PrepareKey: create device key: pkcs11 key object="device" in token "` + tk.label + `": key already exists: it predates this provisioning (reset or --force); delete it from the token or name another object in keyPath`
	if code := cloudtest.ExitCode(err); code != 1 || !strings.Contains(string(out), want) {
		t.Errorf("run over an existing token key: exit %d, want 1 and %q in:\n%s", code, want, out)
	}
	if !reflect.DeepEqual(tokenPublicKey(t, uri), key) {
		t.Error("the existing key was replaced")
	}

	bad := strings.Replace(uri, "type=private", "type=public", 1)
	out, err = fleetprov(bad, "config", "check", "--config", c.config).CombinedOutput()
	want = `environment variable FLEETPROV_KEY_PATH pkcs11 key URI "` + bad + `": type=public: a key URI names a private key: write type=private or leave type out`
	if code := cloudtest.ExitCode(err); code != 2 || !strings.Contains(string(out), want) {
		t.Errorf("config check with a bad URI: exit %d, want 2 and %q in:\n%s", code, want, out)
	}
}

func tokenPublicKey(t *testing.T, uri string) crypto.PublicKey {
	t.Helper()
	s := New()
	defer s.Close()
	pub, err := s.GetPublicKey(context.Background(), &keystore.GetPublicKeyRequest{URI: uri})
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func csrKey(t *testing.T, csrPEM string) crypto.PublicKey {
	t.Helper()
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil {
		return nil
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return csr.PublicKey
}
