package states

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fleetprov/fleetprov/atomicfile"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
)

const testThing = "gg_a2_b9_d2_5a_fd_f9"

// deviceCertPEM is a stand-in for the certificate the cloud issued.
func deviceCertPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: "aws-greengrass-nucleus-lite"},
		NotBefore:    testNow.Add(-time.Hour),
		NotAfter:     testNow.Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// registeredRun is a run as Persist finds it after RegisterThing.
func registeredRun(t *testing.T, d *device) *engine.Run {
	r := d.run(true)
	r.Data.CertificatePEM = deviceCertPEM(t)
	r.Data.CertificateID = "0123456789abcdef"
	r.Data.ThingName = testThing
	r.Data.DeviceConfiguration = map[string]string{"FallbackUrl": "https://www.example.com/test-site", "LocationUrl": "https://example.aws/"}
	return r
}

var commentRE = regexp.MustCompile(`#.*`)

// yamlString reads one string at a dotted path of raw YAML; Greengrass
// service names contain dots, so the path is given as separate keys.
func yamlString(t *testing.T, data []byte, path ...string) string {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatalf("config.yaml is no longer valid YAML: %v", err)
	}
	var v any = m
	for _, k := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%v: not a mapping at %q", path, k)
		}
		v = mm[k]
	}
	s, _ := v.(string)
	return s
}

func TestPersist(t *testing.T) {
	d := newDevice(t, nil)
	cfg := d.cfg
	before := readFile(t, d.configPath)
	r := registeredRun(t, d)

	if err := (&Persist{}).Run(context.Background(), r); err != nil {
		t.Fatalf("Persist: %v", err)
	}

	if got := string(readFile(t, cfg.CertPath)); got != r.Data.CertificatePEM {
		t.Errorf("certificate file = %q, want the certificate from the journal", got)
	}
	if m := mode(t, cfg.CertPath); m != 0o600 {
		t.Errorf("certificate mode = %v, want -rw-------", m)
	}
	var devCfg map[string]string
	if err := json.Unmarshal(readFile(t, DeviceConfigurationPath(cfg)), &devCfg); err != nil {
		t.Fatalf("deviceConfiguration.json: %v", err)
	}
	if !reflect.DeepEqual(devCfg, orEmpty(r.Data.DeviceConfiguration)) {
		t.Errorf("deviceConfiguration.json = %v, want %v", devCfg, r.Data.DeviceConfiguration)
	}
	if got, want := readFile(t, cfg.RootCAOutPath), readFile(t, cfg.RootCAPath); !bytes.Equal(got, want) {
		t.Errorf("root CA copy %s differs from rootCaPath %s", cfg.RootCAOutPath, cfg.RootCAPath)
	}
	if m := mode(t, cfg.RootCAOutPath); m != 0o644 {
		t.Errorf("root CA copy mode = %v, want -rw-r--r--", m)
	}

	// Greengrass lite reads these back from config.yaml.
	after := loadConfig(t, d.configPath)
	got := []string{after.ThingName, after.CertificateFilePath, after.PrivateKeyPath, after.SystemRootCAPath}
	want := []string{testThing, cfg.CertPath, cfg.KeyPath, cfg.RootCAOutPath}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("system thingName, certificateFilePath, privateKeyPath, rootCaPath = %q, want %q", got, want)
	}
	if !config.IsProvisioned(after) {
		t.Error("config.yaml does not read as provisioned")
	}
	raw := readFile(t, d.configPath)
	nucleus := []string{"services", "aws.greengrass.NucleusLite", "configuration"}
	if got := yamlString(t, raw, append(nucleus, "iotDataEndpoint")...); got != cfg.IoTDataHost {
		t.Errorf("NucleusLite iotDataEndpoint = %q, want %q", got, cfg.IoTDataHost)
	}
	if got := yamlString(t, raw, append(nucleus, "iotCredEndpoint")...); got != cfg.IoTCredEndpoint {
		t.Errorf("NucleusLite iotCredEndpoint = %q, want %q", got, cfg.IoTCredEndpoint)
	}
	// Every comment the user (here: cloud init) wrote is still there.
	for _, c := range commentRE.FindAll(before, -1) {
		if !bytes.Contains(raw, c) {
			t.Errorf("comment %q was lost from config.yaml", c)
		}
	}
	if m := mode(t, d.configPath); m != 0o644 {
		t.Errorf("config.yaml mode changed to %v", m)
	}

	wantFiles := []string{cfg.KeyPath, cfg.CSRPath, cfg.CertPath, cfg.RootCAOutPath, DeviceConfigurationPath(cfg), d.configPath}
	if !reflect.DeepEqual(r.Data.Files, wantFiles) {
		t.Errorf("Data.Files = %q, want %q", r.Data.Files, wantFiles)
	}
	assertNoTempFiles(t, filepath.Dir(cfg.CertPath), filepath.Dir(d.configPath))
}

func assertNoTempFiles(t *testing.T, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		m, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
		if len(m) > 0 {
			t.Errorf("temporary files left in %s: %v", dir, m)
		}
	}
}

// Persist may be killed anywhere and run again: the second run must give
// exactly the files the first one did.
func TestPersistTwiceIsIdempotent(t *testing.T) {
	d := newDevice(t, nil)
	cfg := d.cfg
	r := registeredRun(t, d)
	paths := []string{cfg.CertPath, cfg.RootCAOutPath, d.configPath}

	if err := (&Persist{}).Run(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	first := map[string][]byte{}
	firstMode := map[string]os.FileMode{}
	for _, p := range paths {
		first[p], firstMode[p] = readFile(t, p), mode(t, p)
	}

	// The second run starts from a config that already says provisioned,
	// as a resumed run does.
	r2 := d.run(false)
	r2.Config = loadConfig(t, d.configPath)
	r2.Data = &engine.Data{CertificatePEM: r.Data.CertificatePEM, CertificateID: r.Data.CertificateID, ThingName: r.Data.ThingName}
	if err := (&Persist{}).Run(context.Background(), r2); err != nil {
		t.Fatalf("second Persist: %v", err)
	}
	for _, p := range paths {
		if got := readFile(t, p); !bytes.Equal(got, first[p]) {
			t.Errorf("%s changed on the second run:\nfirst:\n%s\nsecond:\n%s", p, first[p], got)
		}
		if m := mode(t, p); m != firstMode[p] {
			t.Errorf("%s mode changed from %v to %v", p, firstMode[p], m)
		}
	}
	assertNoTempFiles(t, filepath.Dir(cfg.CertPath), filepath.Dir(d.configPath))
}

func TestPersistWithoutCertificateWritesNothing(t *testing.T) {
	tests := []struct {
		name string
		data engine.Data
	}{
		{"empty journal data", engine.Data{}},
		{"thing but no certificate", engine.Data{ThingName: testThing}},
		{"certificate but no thing", engine.Data{CertificatePEM: "-----BEGIN CERTIFICATE-----\n"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDevice(t, nil)
			before := readFile(t, d.configPath)
			r := d.run(false)
			*r.Data = tc.data
			err := (&Persist{}).Run(context.Background(), r)
			want := "journal has no registered certificate to persist: run `fleetprov reset` and provision again"
			if err == nil || err.Error() != want {
				t.Fatalf("err = %v, want %q", err, want)
			}
			wantAbsent(t, d.cfg.OutputDir)
			wantAbsent(t, d.cfg.CertPath)
			wantAbsent(t, d.cfg.RootCAOutPath)
			if !bytes.Equal(readFile(t, d.configPath), before) {
				t.Error("config.yaml was changed")
			}
			if r.Data.Files != nil {
				t.Errorf("Data.Files = %q, want none", r.Data.Files)
			}
		})
	}
}

func TestPersistMissingRootCA(t *testing.T) {
	d := newDevice(t, nil)
	before := readFile(t, d.configPath)
	if err := os.Remove(d.cfg.RootCAPath); err != nil {
		t.Fatal(err)
	}
	err := (&Persist{}).Run(context.Background(), registeredRun(t, d))
	want := "read root CA " + d.cfg.RootCAPath + ": open " + d.cfg.RootCAPath + ": no such file or directory"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
	// config.yaml is written last: the device does not read as provisioned
	// while its credentials are incomplete.
	if !bytes.Equal(readFile(t, d.configPath), before) {
		t.Error("config.yaml was changed although the root CA could not be copied")
	}
	wantAbsent(t, d.cfg.RootCAOutPath)
}

// Run as root, the credentials are given to Greengrass's posixUser, and so
// are the directories holding them, so Greengrass can read them.
func TestPersistOwnedByPosixUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root gives files to posixUser")
	}
	if _, err := user.LookupGroup("nogroup"); err != nil {
		t.Skipf("no group nogroup here: %v", err)
	}
	d := newDevice(t, func(s string) string {
		return regexp.MustCompile(`posixUser: ".*"`).ReplaceAllString(s, `posixUser: "nobody:nogroup"`)
	})
	if d.cfg.PosixUser != "nobody:nogroup" {
		t.Fatalf("posixUser = %q", d.cfg.PosixUser)
	}
	if err := (&Persist{}).Run(context.Background(), registeredRun(t, d)); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	for _, p := range []string{d.cfg.CertPath, d.cfg.RootCAOutPath, d.cfg.OutputDir} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("%s owner = %d:%d, want nobody:nogroup (65534:65534)", p, st.Uid, st.Gid)
		}
	}
	// config.yaml keeps its own owner: it is root's file, not Greengrass's.
	fi, _ := os.Stat(d.configPath)
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 {
		t.Errorf("config.yaml owner changed to %d", st.Uid)
	}
}

func TestPersistUnknownPosixUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("posixUser is only looked up when run as root")
	}
	d := newDevice(t, func(s string) string {
		return regexp.MustCompile(`posixUser: ".*"`).ReplaceAllString(s, `posixUser: "ggcore-missing:ggcore"`)
	})
	before := readFile(t, d.configPath)
	err := (&Persist{}).Run(context.Background(), registeredRun(t, d))
	want := `posixUser "ggcore-missing:ggcore": no such user on this system: create it or change runWithDefault.posixUser`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
	wantAbsent(t, d.cfg.CertPath)
	if !bytes.Equal(readFile(t, d.configPath), before) {
		t.Error("config.yaml was changed")
	}
}

// An outputDir that became a symbolic link after the config was checked
// fails the run and its target keeps its owner: the directory is given to
// posixUser through a descriptor that does not follow a link.
func TestPersistNeverGivesAwayALinkTarget(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root gives directories to posixUser")
	}
	if _, err := user.LookupGroup("nogroup"); err != nil {
		t.Skipf("no group nogroup here: %v", err)
	}
	d := newDevice(t, func(s string) string {
		return regexp.MustCompile(`posixUser: ".*"`).ReplaceAllString(s, `posixUser: "nobody:nogroup"`)
	})
	target := filepath.Join(t.TempDir(), "etc")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(d.cfg.OutputDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, d.cfg.OutputDir); err != nil {
		t.Fatal(err)
	}
	err := (&Persist{}).Run(context.Background(), registeredRun(t, d))
	if !errors.Is(err, atomicfile.ErrSymlink) {
		t.Fatalf("Persist = %v, want it refused as a symbolic link", err)
	}
	fi, err := os.Stat(target)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
		t.Errorf("the link's target was given to %d:%d", st.Uid, st.Gid)
	}
}
