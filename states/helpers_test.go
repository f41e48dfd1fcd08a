package states

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
)

// testNow is the clock of every run in these tests, so backup names and
// token times are known in advance.
var testNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// device is one emulator directory made by cloudsim.Init: a Greengrass
// lite config.yaml pointing at the emulator, its claim files and root CA.
type device struct {
	dir        string // the emulator directory
	configPath string
	cfg        *config.Config
}

// newDevice initialises an emulator directory on a free port and loads its
// config.yaml. edit, if not nil, rewrites the file's text first, as a user
// editing the config would.
func newDevice(t *testing.T, edit func(string) string) *device {
	t.Helper()
	dir := t.TempDir()
	addr, err := cloudsim.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if err := cloudsim.Init(cloudsim.InitOptions{Dir: dir, Listen: addr}); err != nil {
		t.Fatalf("cloudsim.Init: %v", err)
	}
	d := &device{dir: dir, configPath: filepath.Join(dir, "config.yaml")}
	if edit != nil {
		b, err := os.ReadFile(d.configPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(d.configPath, []byte(edit(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d.cfg = loadConfig(t, d.configPath)
	return d
}

func loadConfig(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.LoadOptions{Path: path})
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	// Keep a hung exchange from eating the test's whole time budget.
	cfg.ConnectTimeout = 10 * time.Second
	cfg.RequestTimeout = 15 * time.Second
	return cfg
}

// replaceLine swaps one exact piece of config.yaml for another, failing the
// test if the piece is not there (so a change to cloudsim's config cannot
// silently turn an edit into a no-op).
func replaceLine(t *testing.T, old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			t.Fatalf("config.yaml has no %q", old)
		}
		return strings.Replace(s, old, new, 1)
	}
}

func (d *device) run(fresh bool) *engine.Run {
	return &engine.Run{
		Config:  d.cfg,
		Data:    &engine.Data{},
		Log:     slog.New(slog.DiscardHandler),
		Now:     func() time.Time { return testNow },
		Fresh:   fresh,
		Resumed: !fresh,
	}
}

// startCloud serves the device's emulator directory with the given faults
// (in cloudsim's --fault syntax) until the test ends.
func (d *device) startCloud(t *testing.T, faults ...string) *cloudsim.Server {
	t.Helper()
	var fs []cloudsim.Fault
	for _, spec := range faults {
		f, err := cloudsim.ParseFault(spec)
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	srv, err := cloudsim.Open(cloudsim.Options{Dir: d.dir, Faults: fs})
	if err != nil {
		t.Fatalf("cloudsim.Open: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("cloudsim Start: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// session is the claim connection as the CLI wires it: the real dialler.
func session(t *testing.T) *Session {
	s := &Session{Dial: DialIoT}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

func wantAbsent(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s exists (err %v), want it absent", path, err)
	}
}

// parseCSR reads a PEM CSR and checks its signature.
func parseCSR(t *testing.T, b []byte) *x509.CertificateRequest {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("not a PEM CERTIFICATE REQUEST: %q", b)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("CSR signature: %v", err)
	}
	return csr
}

// parseKey reads a PKCS#8 PEM private key file, as Greengrass lite reads
// priv_key.
func parseKey(t *testing.T, path string) crypto.Signer {
	t.Helper()
	block, _ := pem.Decode(readFile(t, path))
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("%s is not a PKCS#8 PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		t.Fatalf("%s: %T cannot sign", path, k)
	}
	return s
}

func parseCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM CERTIFICATE: %q", b)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// recordedSystemctl writes a stand-in for systemctl that appends its
// arguments, one per line and then an "--end" line, to a log file, prints
// what systemctl might, and exits with code exit.
func recordedSystemctl(t *testing.T, exit int, output string) (script, log string) {
	t.Helper()
	dir := t.TempDir()
	script = filepath.Join(dir, "systemctl")
	log = filepath.Join(dir, "argv.log")
	body := "#!/bin/sh\n" +
		"for a in \"$0\" \"$@\"; do printf '%s\\n' \"$a\" >> '" + log + "'; done\n" +
		"echo --end >> '" + log + "'\n" +
		output + "\n" +
		"exit " + strconv.Itoa(exit) + "\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, log
}
