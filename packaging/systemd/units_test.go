// Package systemd holds the units the packages install; its tests check
// them with systemd's own verifier and against the paths fleetprov writes.
package systemd

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/config"
)

const unitFile = "fleetprov.service"

// unit is a unit file's settings: section -> key -> values, in order.
type unit map[string]map[string][]string

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: %q is not a setting", path, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// one is the single value of a setting.
func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		t.Fatalf("[%s] %s is set %d times, want once: %q", section, key, len(vs), vs)
	}
	return vs[0]
}

func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("FLEETPROV_REQUIRE_TOOLS") == "1" {
			t.Fatal("systemd-analyze not found (FLEETPROV_REQUIRE_TOOLS=1 makes this a failure): apt-get install systemd")
		}
		t.Skip("systemd-analyze not found: the units are checked with systemd-analyze verify; apt-get install systemd")
	}
	return p
}

// verify runs systemd-analyze verify on a copy of the unit whose
// /usr/bin/fleetprov is an executable of the test's own (verify insists
// that the commands exist), and returns what it printed.
func verify(t *testing.T, text string) (string, error) {
	t.Helper()
	analyze := systemdAnalyze(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "fleetprov")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(text, "/usr/bin/fleetprov "); n < 2 {
		t.Fatalf("the unit names /usr/bin/fleetprov %d times, want ExecCondition= and ExecStart=", n)
	}
	path := filepath.Join(dir, unitFile)
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, "/usr/bin/fleetprov ", bin+" ")), 0o644); err != nil {
		t.Fatal(err)
	}
	// The man page comes with the package, not with this checkout.
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// The unit as shipped passes systemd-analyze verify without a word.
func TestUnitVerifies(t *testing.T) {
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	out, err := verify(t, string(b))
	if err != nil || out != "" {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unitFile, err, out)
	}
}

// The check above can fail: verify only warns about a setting it does not
// know (such as RestartSteps= on systemd before 254) and still exits 0,
// so any output counts.
func TestUnitVerifyCatchesAWarning(t *testing.T) {
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), "[Service]\n", "[Service]\nRestartStepz=5\n", 1)
	out, _ := verify(t, text)
	if !strings.Contains(out, "Unknown key 'RestartStepz' in section [Service]") {
		t.Fatalf("verify did not warn about an unknown key; it printed %q", out)
	}
}

// What the unit promises: one run before Greengrass, skipped once
// provisioned, retried on exit 1 but not 2.
func TestUnitSettings(t *testing.T) {
	u := readUnit(t, unitFile)
	for _, tc := range []struct{ section, key, want string }{
		{"Unit", "Before", "greengrass-lite.target"},
		{"Unit", "After", "network-online.target"},
		{"Unit", "Wants", "network-online.target"},
		{"Service", "Type", "oneshot"},
		{"Service", "ExecStart", "/usr/bin/fleetprov run"},
		{"Service", "ExecCondition", "/bin/sh -c '! /usr/bin/fleetprov status --provisioned'"},
		{"Service", "Restart", "on-failure"},
		{"Service", "RestartPreventExitStatus", "2"},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Install", "WantedBy", "greengrass-lite.target"},
	} {
		if got := u.one(t, tc.section, tc.key); got != tc.want {
			t.Errorf("[%s] %s=%s, want %s", tc.section, tc.key, got, tc.want)
		}
	}
	if u.one(t, "Service", "RestartSec") == "0" {
		t.Error("RestartSec=0 retries at once, in a tight loop")
	}
	// Each of these limits the devices the unit may open (ProtectClock=yes
	// by the DeviceAllow= it implies), and a TPM or HSM key store needs
	// its device.
	for _, key := range []string{"PrivateDevices", "ProtectClock", "DeviceAllow", "DevicePolicy"} {
		if v, ok := u["Service"][key]; ok {
			t.Errorf("[Service] %s=%s would keep a TPM or HSM key store from its device", key, v[0])
		}
	}
}

// The skip: ExecCondition= runs the unit on status' exit 1 (not
// provisioned) and 2 (a config error, which run then reports), and skips
// it (exit 1..254) only on 0 (provisioned).
func TestUnitSkipsOnlyWhenProvisioned(t *testing.T) {
	u := readUnit(t, unitFile)
	line := u.one(t, "Service", "ExecCondition")
	argv := strings.SplitN(line, " ", 3) // /bin/sh -c '<script>'
	if len(argv) != 3 || argv[0] != "/bin/sh" || argv[1] != "-c" {
		t.Fatalf("ExecCondition=%s is not /bin/sh -c '...'", line)
	}
	script := strings.Trim(argv[2], "'")
	dir := t.TempDir()
	stub := filepath.Join(dir, "fleetprov")
	for _, tc := range []struct {
		statusExit int
		wantRun    bool
	}{{0, false}, {1, true}, {2, true}} {
		if err := os.WriteFile(stub, []byte("#!/bin/sh\n[ \"$*\" = 'status --provisioned' ] || exit 99\nexit "+string(rune('0'+tc.statusExit))+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		err := exec.Command("/bin/sh", "-c", strings.ReplaceAll(script, "/usr/bin/fleetprov", stub)).Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		// systemd: 0 runs the unit, 1..254 skips it, 255 fails it.
		if gotRun := code == 0; gotRun != tc.wantRun || code == 255 {
			t.Errorf("status exits %d: condition exits %d (run=%v), want run=%v", tc.statusExit, code, gotRun, tc.wantRun)
		}
	}
}

// ReadWritePaths= opens exactly what fleetprov writes in the default
// layout: every file it writes is under an entry, and every entry holds
// something it writes.
func TestUnitWritablePaths(t *testing.T) {
	u := readUnit(t, unitFile)
	var rw []string
	for _, v := range u["Service"]["ReadWritePaths"] {
		for _, p := range strings.Fields(v) {
			rw = append(rw, filepath.Clean(strings.TrimPrefix(p, "-")))
		}
	}
	cfg, err := config.Load(config.LoadOptions{Path: filepath.Join("..", "..", "configs", "aws-greengrass-lite.yaml"), SkipFileChecks: true})
	if err != nil {
		t.Fatalf("the sample config: %v", err)
	}
	written := map[string]string{
		"config.yaml (the Greengrass config, rewritten in place)": config.DefaultPath,
		"certPath":    cfg.CertPath,
		"keyPath":     cfg.KeyPath,
		"csrPath":     cfg.CSRPath,
		"root CA":     cfg.RootCAOutPath,
		"journalPath": cfg.JournalPath,
		// retireClaim deletes them once the new identity is verified.
		"claimKeyPath":  cfg.ClaimKeyPath,
		"claimCertPath": cfg.ClaimCertPath,
	}
	under := func(p, dir string) bool {
		rel, err := filepath.Rel(dir, p)
		return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
	}
	used := map[string]bool{}
	for what, p := range written {
		ok := false
		for _, dir := range rw {
			if under(filepath.Dir(p), dir) {
				ok, used[dir] = true, true
			}
		}
		if !ok {
			t.Errorf("%s %s is not under ReadWritePaths=%q", what, p, rw)
		}
	}
	for _, dir := range rw {
		if !used[dir] {
			t.Errorf("ReadWritePaths= opens %s, where fleetprov writes nothing", dir)
		}
	}
}
