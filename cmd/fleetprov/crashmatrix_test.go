package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
	"github.com/fleetprov/fleetprov/internal/faultpoint"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// crashScenario is one command the crash matrix kills at each of its
// durable writes.
type crashScenario struct {
	name string
	// env is added to every command's environment.
	env []string
	// prepare changes the local cloud before it starts; nil for nothing.
	prepare func(dir string)
	// provisioned: the device is provisioned before the command runs.
	provisioned bool
	args        []string
	// next are the commands a user runs after the crash, in order; each
	// must exit 0 and the last leaves the device provisioned.
	next [][]string
	// from, if set, kills only at the points from the journal record of
	// this state on: what is before it is the matrix of another scenario.
	from string
	// retires: the claim files must be gone once the device is
	// provisioned (retireClaim).
	retires bool
}

var allCrashScenarios = []crashScenario{
	{name: "run", args: []string{"run"}, next: [][]string{{"run"}}},
	{name: "run-create-keys", env: []string{"FLEETPROV_CERTIFICATE_MODE=create-keys"}, prepare: allowCreateKeys, args: []string{"run"}, next: [][]string{{"run"}}},
	// Retiring the claim, killed at each of its points and at the
	// records around it, is finished by the next run.
	{name: "run-retire-claim", env: []string{"FLEETPROV_RETIRE_CLAIM=true"}, args: []string{"run"}, next: [][]string{{"run"}}, from: engine.Verify, retires: true},
	{name: "run-force", provisioned: true, args: []string{"run", "--force"}, next: [][]string{{"run"}}},
	{name: "reset", provisioned: true, args: []string{"reset"}, next: [][]string{{"reset"}, {"run"}}},
	// A run, not a reset, finishes a reset that was interrupted.
	{name: "reset-then-run", provisioned: true, args: []string{"reset"}, next: [][]string{{"run"}}},
}

// crashPoint is one durable-write point a recording run reached.
type crashPoint struct{ name, detail string }

// TestCrashMatrix kills each command at each durable write it makes (a
// journal record, each step of each atomic file write, each directory
// created or fsynced, each file set aside, reset's plan), then runs what a
// user would run next, and checks what a user would notice: the next
// command succeeds and the device ends provisioned; no output file is
// ever partial; config.yaml always loads; the cloud never gets two ACTIVE
// certificates from one provisioning.
func TestCrashMatrix(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string][]crashPoint{}
	for _, sc := range allCrashScenarios {
		dev := newCrashDevice(t, self, sc)
		rec := filepath.Join(t.TempDir(), "points")
		if out, err := dev.command(sc.args, envCrashRecord+"="+rec); err != nil {
			t.Fatalf("%s, recording: %v\n%s", sc.name, err, out)
		}
		recorded[sc.name] = readCrashPoints(t, rec)
		t.Logf("%s: %d crash points", sc.name, len(recorded[sc.name]))
	}
	t.Run("doc", func(t *testing.T) { checkCrashDoc(t, recorded) })
	// Each case spends most of its time waiting for fsync and for its
	// processes to start, not on a CPU: run more at once than -parallel's
	// default of one per CPU.
	slots := make(chan struct{}, 2*runtime.GOMAXPROCS(0))
	for _, sc := range allCrashScenarios {
		points := recorded[sc.name]
		t.Run(sc.name, func(t *testing.T) {
			var wg sync.WaitGroup
			defer wg.Wait()
			seen := map[string]int{}
			for i, p := range points {
				// Not "#": the name goes into the test's directory, and a
				// key path is a file: URI.
				name := p.name + "(" + shortDetail(p.detail) + ")"
				seen[name]++
				if seen[name] > 1 {
					name += fmt.Sprintf("_%d", seen[name])
				}
				if !crashSubset(points, i) || i < crashFrom(points, sc.from) {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					slots <- struct{}{}
					defer func() { <-slots }()
					t.Run(name, func(t *testing.T) { crashAt(t, self, sc, points[:i+1]) })
				}()
			}
		})
	}
}

// crashSubset says whether the i-th point is tested in this build: all of
// them normally. Under the race detector, where a run is several times
// slower, one point of each name stands for the rest (the middle one, so
// that the later states are among them); CI runs the whole matrix without
// the race detector in a step of its own.
func crashSubset(points []crashPoint, i int) bool {
	if !raceEnabled {
		return true
	}
	var same []int
	for j, p := range points {
		if p.name == points[i].name {
			same = append(same, j)
		}
	}
	return same[len(same)/2] == i
}

// crashFrom is the index of the first point of the journal record
// entering state, 0 for "" (every point).
func crashFrom(points []crashPoint, state string) int {
	if state == "" {
		return 0
	}
	for i, p := range points {
		if p.name == faultpoint.JournalAppend && p.detail == state {
			return i
		}
	}
	return len(points)
}

func shortDetail(d string) string {
	if d == "." || !strings.Contains(d, "/") {
		return d
	}
	return filepath.Base(d)
}

// crashAt runs sc's command killed at the last of points, then the
// commands that follow it, and checks the device at each stage.
func crashAt(t *testing.T, self string, sc crashScenario, points []crashPoint) {
	dev := newCrashDevice(t, self, sc)
	before := dev.snapshot(t)
	activeBefore := dev.activeCerts(t)

	rec := filepath.Join(t.TempDir(), "points")
	out, err := dev.command(sc.args, envCrashRecord+"="+rec, fmt.Sprintf("%s=%d", envCrashAt, len(points)))
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("%v: %v, want killed at point %d\n%s", sc.args, err, len(points), out)
	}
	if got := readCrashPoints(t, rec); !equalPoints(got, points) {
		t.Fatalf("the killed run reached\n%s\nwhere the recording run reached\n%s", formatPoints(got), formatPoints(points))
	}
	dev.checkFiles(t, "after the crash", before)

	for _, args := range sc.next {
		if out, err := dev.command(args); err != nil {
			t.Fatalf("%v after the crash: %v\n%s", args, err, out)
		}
		dev.checkFiles(t, fmt.Sprintf("after %v", args), before)
	}
	dev.checkProvisioned(t, activeBefore)
	if sc.retires {
		dev.checkClaimRetired(t)
	}
}

// checkClaimRetired: both claim files are gone and the journal says so.
func (d *crashDevice) checkClaimRetired(t *testing.T) {
	t.Helper()
	cfg, err := config.Load(config.LoadOptions{Path: d.cfg, SkipFileChecks: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{cfg.ClaimCertPath, cfg.ClaimKeyPath} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("claim file %s is still there (%v), want it retired", p, err)
		}
	}
	recs, _, err := engine.ReadJournal(cfg.JournalPath)
	if err != nil || len(recs) == 0 {
		t.Fatalf("journal: %d records, %v", len(recs), err)
	}
	if last := recs[len(recs)-1]; last.State != engine.Done || len(last.Data.ClaimRetired) != 2 {
		t.Errorf("journal ends in %s with claim retired %q, want Done with both claim files", last.State, last.Data.ClaimRetired)
	}
}

// crashDevice is a local cloud and a device configured for it.
type crashDevice struct {
	self, dir, cfg, creds string
	env                   []string
}

func newCrashDevice(t *testing.T, self string, sc crashScenario) *crashDevice {
	t.Helper()
	dir, _ := cloudtest.Start(t, cloudsim.Options{}, sc.prepare)
	d := &crashDevice{
		self:  self,
		dir:   dir,
		cfg:   filepath.Join(dir, "config.yaml"),
		creds: filepath.Join(dir, "device", "credentials"),
		// A race-detecting binary sleeps a second on exit unless told
		// not to; a race it finds still fails the command (exit 66).
		env: append(append(os.Environ(), envBeCLI+"=1", envCrashRoot+"="+dir, "FLEETPROV_RETRY_DEADLINE=60s",
			"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")), sc.env...),
	}
	if sc.provisioned {
		if out, err := d.command([]string{"run"}); err != nil {
			t.Fatalf("provisioning before %v: %v\n%s", sc.args, err, out)
		}
	}
	return d
}

func (d *crashDevice) command(args []string, env ...string) ([]byte, error) {
	cmd := exec.Command(d.self, append(args, "--config", d.cfg)...)
	cmd.Env = append(d.env, env...)
	return cmd.CombinedOutput()
}

// outputs are the files a run writes and reset sets aside.
func (d *crashDevice) outputs() []string {
	return []string{
		filepath.Join(d.creds, config.KeyFileName),
		filepath.Join(d.creds, config.CSRFileName),
		filepath.Join(d.creds, config.CertFileName),
		filepath.Join(d.creds, config.RootCAFileName),
		filepath.Join(d.creds, "deviceConfiguration.json"),
		d.cfg,
		filepath.Join(d.dir, "device", "journal"),
	}
}

func (d *crashDevice) snapshot(t *testing.T) map[string][]byte {
	t.Helper()
	s := map[string][]byte{}
	for _, p := range d.outputs() {
		if b, err := os.ReadFile(p); err == nil {
			s[p] = b
		}
	}
	return s
}

// checkFiles: each output file is absent, as it was before the command,
// or a whole file of its kind; each backup is a whole copy of what it
// backs up; config.yaml loads.
func (d *crashDevice) checkFiles(t *testing.T, when string, before map[string][]byte) {
	t.Helper()
	for _, p := range d.outputs() {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", when, err)
			continue
		}
		if old, ok := before[p]; ok && bytes.Equal(b, old) {
			continue
		}
		if err := d.wholeFile(p, b); err != nil {
			t.Errorf("%s: %s is neither absent, its old content nor a whole new file: %v\n%s", when, p, err, b)
		}
	}
	if _, err := config.Load(config.LoadOptions{Path: d.cfg, SkipFileChecks: true}); err != nil {
		t.Errorf("%s: config.yaml does not load: %v", when, err)
	}
	for _, p := range d.outputs() {
		baks, _ := filepath.Glob(p + ".bak-*")
		for _, bak := range baks {
			b, err := os.ReadFile(bak)
			if err != nil {
				t.Errorf("%s: %v", when, err)
				continue
			}
			// A resumed PrepareKey sets aside a key the killed run
			// made: whole, but not one from before the command.
			if !bytes.Equal(b, before[p]) && (filepath.Base(p) != config.KeyFileName || d.wholeFile(p, b) != nil) {
				t.Errorf("%s: backup %s is not the %s from before the command", when, bak, filepath.Base(p))
			}
		}
	}
}

// wholeFile checks that b is a complete file of the kind p holds.
func (d *crashDevice) wholeFile(p string, b []byte) error {
	switch filepath.Base(p) {
	case config.KeyFileName:
		_, err := keystore.ParsePrivateKeyPEM(b, p)
		return err
	case config.CSRFileName:
		blk, rest := pem.Decode(b)
		if blk == nil || len(bytes.TrimSpace(rest)) != 0 {
			return errors.New("not one PEM block")
		}
		csr, err := x509.ParseCertificateRequest(blk.Bytes)
		if err != nil {
			return err
		}
		return csr.CheckSignature()
	case config.CertFileName:
		_, err := readCert(p)
		return err
	case config.RootCAFileName:
		ca, err := os.ReadFile(filepath.Join(d.dir, "AmazonRootCA1.pem"))
		if err != nil || !bytes.Equal(b, ca) {
			return fmt.Errorf("not the cloud's root CA (%v)", err)
		}
		return nil
	case "deviceConfiguration.json":
		var m map[string]string
		return json.Unmarshal(b, &m)
	case "config.yaml":
		return nil // loaded by checkFiles
	case "journal":
		// Whole records only, each one a state.
		recs, skipped, err := engine.ReadJournal(p)
		if err != nil || skipped != 0 || len(recs) == 0 && len(b) != 0 {
			return fmt.Errorf("%d records, %d skipped (%v)", len(recs), skipped, err)
		}
		return nil
	}
	return fmt.Errorf("no check for %s", p)
}

// checkProvisioned: the device can connect with what its config names,
// that certificate is ACTIVE, and the command and its recovery made at
// most one more ACTIVE certificate. No temporary file is left behind.
func (d *crashDevice) checkProvisioned(t *testing.T, activeBefore int) {
	t.Helper()
	// Without the claim checks: a retired claim is gone.
	cfg, err := config.Load(config.LoadOptions{Path: d.cfg, SkipFileChecks: true})
	if err != nil {
		t.Fatal(err)
	}
	if !config.IsProvisioned(cfg) || cfg.ThingName == "" || cfg.CertificateFilePath != cfg.CertPath {
		t.Errorf("config.yaml names certificate %q and thing %q, want %s and a thing", cfg.CertificateFilePath, cfg.ThingName, cfg.CertPath)
	}
	if err := certOK(cfg.CertPath, filepath.Join(d.dir, "AmazonRootCA1.pem"), cfg.KeyPath); err != nil {
		t.Error(err)
	}
	cert, err := readCert(cfg.CertPath)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.Raw)
	id := hex.EncodeToString(sum[:])
	reg, err := cloudsim.ReadRegistry(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	if c := reg.Certificates[id]; c == nil || c.Status != cloudsim.StatusActive || c.ThingName != cfg.ThingName {
		t.Errorf("the cloud has the device's certificate as %+v, want ACTIVE for %s", c, cfg.ThingName)
	}
	if n := d.activeCerts(t); n > activeBefore+1 {
		t.Errorf("the cloud holds %d ACTIVE device certificates, %d before the command: want at most one more", n, activeBefore)
	}
	for _, dir := range []string{d.dir, filepath.Join(d.dir, "device"), d.creds} {
		tmps, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
		if len(tmps) > 0 {
			t.Errorf("temporary files left behind: %v", tmps)
		}
	}
}

func (d *crashDevice) activeCerts(t *testing.T) int {
	t.Helper()
	n, err := cloudCounts(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	return n["active"]
}

func readCrashPoints(t *testing.T, path string) []crashPoint {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []crashPoint
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		name, detail, ok := strings.Cut(line, "\t")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		out = append(out, crashPoint{name, detail})
	}
	return out
}

func equalPoints(a, b []crashPoint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func formatPoints(ps []crashPoint) string {
	var b strings.Builder
	for i, p := range ps {
		fmt.Fprintf(&b, "  %3d %s %s\n", i+1, p.name, p.detail)
	}
	return b.String()
}

// allowCreateKeys widens the local cloud's claim policy, which covers the
// CSR flow only, to CreateKeysAndCertificate, as an AWS user of that mode
// must.
func allowCreateKeys(dir string) {
	p := filepath.Join(dir, "policies", "GreengrassProvisioningClaimPolicy.json")
	b, err := os.ReadFile(p)
	if err == nil {
		err = os.WriteFile(p, bytes.ReplaceAll(b, []byte("certificates/create-from-csr/*"), []byte("certificates/create*")), 0o644)
	}
	if err != nil {
		panic(err)
	}
}
