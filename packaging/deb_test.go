package packaging

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
)

// Where the package puts things, and the defaults fleetprov writes to:
// the test provisions into the package's own directories, since what
// `dpkg -r` must keep is what a device provisioned there.
const (
	binPath     = "/usr/bin/fleetprov"
	hostPath    = "/usr/lib/fleetprov/fleetprov-plugin-host"
	linkPath    = "/usr/bin/fleet-provisioning"
	unitPath    = "/usr/lib/systemd/system/fleetprov.service"
	manDir      = "/usr/share/man/man1"
	dataDir     = "/var/lib/greengrass"
	credDir     = "/var/lib/greengrass/credentials"
	journalDir  = "/var/lib/greengrass/fleetprov"
	journalPath = "/var/lib/greengrass/fleetprov/journal"
)

// TestDebInstallRunRemove builds the .deb with the Taskfile's package task,
// installs it with dpkg, provisions a device against the local cloud with
// the installed binary under both its names, upgrades it, then removes and
// purges it: the device's key, certificate and journal must outlive both.
// Then it installs it beside Greengrass lite's package, which has a
// fleet-provisioning of its own.
func TestDebInstallRunRemove(t *testing.T) {
	if raceEnabled {
		t.Skip("the package test installs a binary built without -race, so it adds nothing under -race; .ci/run runs it on its own: go test -count=1 -run TestDeb ./packaging")
	}
	requireSystem(t)

	// Registered before anything is installed, so that a failure half-way
	// leaves no package and none of the test's device state behind.
	// requireSystem made sure neither existed before.
	t.Cleanup(func() {
		for _, pkg := range []string{"fleetprov", greengrassPkg} {
			if out, err := runDpkg("--purge", pkg); err != nil {
				t.Errorf("cleanup: dpkg --purge %s: %v\n%s", pkg, err, out)
			}
		}
		if err := os.RemoveAll(dataDir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})

	dist := t.TempDir()
	arch := strings.TrimSpace(mustRun(t, "dpkg", "--print-architecture"))
	v1, v2 := "0.0.1~pkgtest1", "0.0.1~pkgtest2"
	deb1 := buildDeb(t, dist, v1, arch)
	deb2 := buildDeb(t, dist, v2, arch)

	mustDpkg(t, "-i", deb1)
	if got := strings.TrimSpace(mustRun(t, "dpkg-query", "-W", "-f=${Version}", "fleetprov")); got != v1 {
		t.Errorf("dpkg-query: installed version %q, want %q", got, v1)
	}
	if got := mustRun(t, binPath, "--version"); got != "fleetprov "+v1+"\n" {
		t.Errorf("fleetprov --version printed %q, want the package's version %q", got, v1)
	}
	checkInstalled(t)
	// The package's binary has the TPM key store (docs/packaging.md).
	if info := mustRun(t, "go", "version", "-m", binPath); !regexp.MustCompile(`(?m)^\s+build\s+-tags=tpm$`).MatchString(info) {
		t.Errorf("the installed fleetprov was not built with -tags tpm:\n%s", info)
	}
	// The plugin host, where fleetprov looks for it first after its own
	// directory: static as fleetprov is, and it answers with its Hello
	// (then, its stdin at EOF, exits as when fleetprov is gone).
	if info := mustRun(t, "go", "version", "-m", hostPath); !regexp.MustCompile(`(?m)^\s+build\s+CGO_ENABLED=0$`).MatchString(info) {
		t.Errorf("the installed plugin host was not built with CGO_ENABLED=0:\n%s", info)
	}
	if out := mustRun(t, hostPath); !strings.Contains(out, "fleetprov-plugin-host") {
		t.Errorf("the installed plugin host did not answer with its Hello: %q", out)
	}
	checkManPages(t)
	checkCompletions(t)

	// Provision as Greengrass lite would run its own program.
	cloud, _ := cloudtest.Start(t, cloudsim.Options{}, nil)
	cfg := deviceConfig(t, cloud)
	out := mustRun(t, linkPath, "--config", cfg)
	if !strings.Contains(out, "provisioned in") {
		t.Errorf("fleet-provisioning did not report provisioning:\n%s", out)
	}
	st := status(t, cfg)
	if !st.Provisioned || st.ThingName == "" || st.Journal != journalPath {
		t.Fatalf("status after fleet-provisioning: provisioned %v, thing %q, journal %q; want provisioned, a thing, journal %s", st.Provisioned, st.ThingName, st.Journal, journalPath)
	}
	reg, err := cloudsim.ReadRegistry(cloud)
	if err != nil {
		t.Fatal(err)
	}
	var things []string
	for _, th := range reg.SortedThings() {
		things = append(things, th.Name)
	}
	if len(things) != 1 || things[0] != st.ThingName {
		t.Errorf("the local cloud registered things %q, want only %q", things, st.ThingName)
	}
	state := deviceState(t)
	checkMode(t, filepath.Join(credDir, "priv_key"), 0o600)

	// An upgrade replaces the program and keeps the device as it was,
	// down to the owner fleetprov gives the credentials to (posixUser;
	// root in this config, so set here as another user's).
	if err := os.Chown(credDir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	mustDpkg(t, "-i", deb2)
	if fi, err := os.Stat(credDir); err != nil {
		t.Error(err)
	} else if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 || fi.Mode().Perm() != 0o700 {
		t.Errorf("after the upgrade %s is %d:%d %v, want 65534:65534 -rwx------ as before", credDir, st.Uid, st.Gid, fi.Mode().Perm())
	}
	if got := mustRun(t, binPath, "--version"); got != "fleetprov "+v2+"\n" {
		t.Errorf("after the upgrade fleetprov --version printed %q, want %q", got, v2)
	}
	checkState(t, "after the upgrade", state)
	if out := mustRun(t, binPath, "run", "--config", cfg); !strings.Contains(out, "already provisioned") {
		t.Errorf("fleetprov run after the upgrade did not say the device is already provisioned:\n%s", out)
	}

	mustDpkg(t, "-r", "fleetprov")
	for _, p := range []string{binPath, hostPath, linkPath, unitPath, filepath.Join(manDir, "fleetprov.1.gz"), filepath.Join(manDir, "fleet-provisioning.1.gz")} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after dpkg -r, %s: %v; want it gone", p, err)
		}
	}
	checkState(t, "after dpkg -r", state)
	checkMode(t, credDir, fs.ModeDir|0o700)
	checkMode(t, journalDir, fs.ModeDir|0o700)

	mustDpkg(t, "--purge", "fleetprov")
	checkState(t, "after dpkg --purge", state)
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "fleetprov").CombinedOutput(); err == nil && strings.Contains(string(out), "installed") && !strings.Contains(string(out), "not-installed") {
		t.Errorf("after dpkg --purge, dpkg-query says %q", out)
	}
	if out := mustRun(t, "dpkg-divert", "--list", linkPath); strings.TrimSpace(out) != "" {
		t.Errorf("after dpkg --purge a diversion is left: %s", out)
	}

	// Beside Greengrass nucleus lite's own package, which installs a
	// fleet-provisioning of its own: fleetprov's takes the name, in
	// whichever order the two are installed, and gives it back on removal.
	gg := buildGreengrassStandIn(t, dist)
	mustDpkg(t, "-i", gg)
	mustDpkg(t, "-i", deb2)
	checkFleetProvisioning(t, "fleetprov installed after Greengrass lite")
	mustDpkg(t, "-r", "fleetprov")
	if out := mustRun(t, linkPath); out != greengrassOutput {
		t.Errorf("after dpkg -r fleetprov, fleet-provisioning printed %q, want Greengrass lite's own %q", out, greengrassOutput)
	}
	if _, err := os.Lstat(divertedPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after dpkg -r fleetprov, %s: %v; want it moved back", divertedPath, err)
	}
	mustDpkg(t, "-i", deb2)
	mustDpkg(t, "-i", gg) // Greengrass lite upgraded (here: reinstalled) after fleetprov
	checkFleetProvisioning(t, "Greengrass lite reinstalled after fleetprov")
}

// A stand-in for Greengrass nucleus lite's package (aws-greengrass-lite),
// which cannot be installed here: only the file the two packages share.
const (
	greengrassPkg    = "aws-greengrass-lite"
	greengrassOutput = "greengrass-lite fleet-provisioning\n"
	divertedPath     = "/usr/bin/fleet-provisioning.greengrass-lite"
)

func buildGreengrassStandIn(t *testing.T, dist string) string {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "fleet-provisioning")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nprintf '"+strings.TrimSuffix(greengrassOutput, "\n")+"\\n'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "nfpm.yaml")
	yaml := "name: " + greengrassPkg + "\nversion: 0.0.1~pkgtest\nversion_schema: none\narch: all\nmaintainer: test\ndescription: stand-in\n" +
		"contents:\n  - src: " + script + "\n    dst: " + linkPath + "\n    file_info:\n      mode: 0755\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	deb := filepath.Join(dist, greengrassPkg+"_0.0.1~pkgtest_all.deb")
	cmd := exec.Command("go", "tool", "-modfile=tools/go.mod", "nfpm", "package", "--config", cfg, "--packager", "deb", "--target", deb)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nfpm package (the Greengrass lite stand-in): %v\n%s", err, out)
	}
	return deb
}

func checkFleetProvisioning(t *testing.T, when string) {
	t.Helper()
	if target, err := os.Readlink(linkPath); err != nil || target != "fleetprov" {
		t.Errorf("%s: %s links to %q (%v), want fleetprov", when, linkPath, target, err)
	}
	if out := mustRun(t, divertedPath); out != greengrassOutput {
		t.Errorf("%s: %s printed %q, want Greengrass lite's %q", when, divertedPath, out, greengrassOutput)
	}
}

// requireSystem skips (fails with FLEETPROV_REQUIRE_TOOLS=1) unless the
// test may install a package on this machine without touching anything
// that was there before.
func requireSystem(t *testing.T) {
	t.Helper()
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "the package test installs a .deb with dpkg, which needs root"
	default:
		for _, tool := range []string{"dpkg", "dpkg-deb", "dpkg-query", "dpkg-divert", "groff", "go", "bash"} {
			if _, err := exec.LookPath(tool); err != nil {
				why = tool + " is not installed; the package test needs dpkg, groff (apt-get install groff-base), go and bash"
				break
			}
		}
	}
	if why == "" {
		for _, pkg := range []string{"fleetprov", greengrassPkg} {
			if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", pkg).Output(); err == nil && strings.Contains(string(out), " installed") {
				why = pkg + " is installed on this machine; the package test would replace and remove it"
			}
		}
	}
	for _, p := range []string{binPath, linkPath, divertedPath, dataDir} {
		if why != "" {
			break
		}
		if _, err := os.Lstat(p); err == nil {
			why = p + " exists on this machine; the package test installs there and removes what it made, so it runs only where that path is free"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("FLEETPROV_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s; FLEETPROV_REQUIRE_TOOLS=1 makes this a failure", why)
	}
	t.Skip(why)
}

// buildDeb runs the Taskfile's package task as a user would and returns
// the package, which must be named fleetprov_<version>_<arch>.deb.
func buildDeb(t *testing.T, dist, version, arch string) string {
	t.Helper()
	cmd := exec.Command("go", "tool", "-modfile=tools/go.mod", "task", "package", "VERSION="+version, "DIST="+dist)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("task package: %v\n%s", err, out)
	}
	deb := filepath.Join(dist, "fleetprov_"+version+"_"+arch+".deb")
	if _, err := os.Stat(deb); err != nil {
		ls, _ := filepath.Glob(filepath.Join(dist, "*"))
		t.Fatalf("task package did not write %s: %v (the directory holds %q)", deb, err, ls)
	}
	return deb
}

func checkInstalled(t *testing.T) {
	t.Helper()
	for p, mode := range map[string]fs.FileMode{
		binPath:  0o755,
		hostPath: 0o755,
		unitPath: 0o644,
		"/usr/share/bash-completion/completions/fleetprov":           0o644,
		"/usr/share/zsh/vendor-completions/_fleetprov":               0o644,
		"/usr/share/fish/vendor_completions.d/fleetprov.fish":        0o644,
		"/usr/share/doc/fleetprov/examples/local-cloud.yaml":         0o644,
		"/usr/share/doc/fleetprov/examples/aws-greengrass-lite.yaml": 0o644,
		credDir:                      fs.ModeDir | 0o700,
		journalDir:                   fs.ModeDir | 0o700,
		"/usr/lib/fleetprov/plugins": fs.ModeDir | 0o755,
	} {
		checkMode(t, p, mode)
	}
	if target, err := os.Readlink(linkPath); err != nil || target != "fleetprov" {
		t.Errorf("%s: link to %q (%v), want a link to fleetprov", linkPath, target, err)
	}
	if target, err := os.Readlink(filepath.Join(manDir, "fleet-provisioning.1.gz")); err != nil || target != "fleetprov-run.1.gz" {
		t.Errorf("fleet-provisioning(1): link to %q (%v), want a link to fleetprov-run.1.gz", target, err)
	}
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("%v", err)
		return
	}
	if got := fi.Mode() & (fs.ModeType | fs.ModePerm); got != want {
		t.Errorf("%s: mode %v, want %v", path, got, want)
	}
}

// checkManPages renders every installed page with groff's warnings on:
// a page groff warns about shows garbled in man.
func checkManPages(t *testing.T) {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join(manDir, "fleetprov*.1.gz"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"fleetprov.1.gz", "fleetprov-run.1.gz", "fleetprov-status.1.gz", "fleetprov-reset.1.gz", "fleetprov-config-check.1.gz", "fleetprov-cloud-init.1.gz", "fleetprov-cloud-serve.1.gz"}
	for _, w := range want {
		if !contains(pages, filepath.Join(manDir, w)) {
			t.Errorf("no man page %s among %q", w, pages)
		}
	}
	for _, p := range append(pages, filepath.Join(manDir, "fleet-provisioning.1.gz")) {
		text := groff(t, p)
		if !strings.Contains(text, "NAME") || !strings.Contains(text, "SYNOPSIS") {
			t.Errorf("%s renders without NAME or SYNOPSIS:\n%s", p, text)
		}
	}
	if text := groff(t, filepath.Join(manDir, "fleet-provisioning.1.gz")); !strings.Contains(text, "fleetprov run [flags]") {
		t.Errorf("man fleet-provisioning does not show fleetprov run's synopsis:\n%s", text)
	}
}

func groff(t *testing.T, page string) string {
	t.Helper()
	f, err := os.Open(page) // through the link, as man reads it
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", page, err)
	}
	src, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", page, err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("groff", "-man", "-Tascii", "-ww")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(src), &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("groff -man -ww %s: %v\n%s", page, err, stderr.String())
	}
	// Drop the overstrike that marks bold and underline in ASCII output.
	return regexp.MustCompile(`.\x08`).ReplaceAllString(stdout.String(), "")
}

// checkCompletions checks that the scripts parse and that the binary
// answers the completion requests they make.
func checkCompletions(t *testing.T) {
	t.Helper()
	mustRun(t, "bash", "-n", "/usr/share/bash-completion/completions/fleetprov")
	out := mustRun(t, binPath, "__complete", "st")
	if !strings.Contains(out, "status") {
		t.Errorf("fleetprov __complete st (what the completion scripts ask) answered:\n%s", out)
	}
}

// deviceConfig is the local cloud's device config with the device's files
// left at their defaults, which are the package's directories.
func deviceConfig(t *testing.T, cloud string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cloud, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, r := range []struct{ re, with string }{
		{`(?m)^  rootPath: .*$`, `  rootPath: "` + dataDir + `/"`},
		{`(?m)^      outputDir: .*\n`, ``},
		{`(?m)^      journalPath: .*\n`, ``},
	} {
		re := regexp.MustCompile(r.re)
		if !re.MatchString(s) {
			t.Fatalf("the local cloud's config.yaml has no line matching %s:\n%s", r.re, s)
		}
		s = re.ReplaceAllString(s, r.with)
	}
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type statusJSON struct {
	Journal     string `json:"journal"`
	ThingName   string `json:"thingName"`
	Provisioned bool   `json:"provisioned"`
}

func status(t *testing.T, cfg string) statusJSON {
	t.Helper()
	out := mustRun(t, binPath, "status", "--json", "--config", cfg)
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("fleetprov status --json: %v\n%s", err, out)
	}
	return st
}

// deviceState is what provisioning left that must outlive the package:
// the key, the certificate and the journal, by path.
func deviceState(t *testing.T) map[string][]byte {
	t.Helper()
	state := map[string][]byte{}
	for _, p := range []string{filepath.Join(credDir, "priv_key"), filepath.Join(credDir, "certificate.pem"), journalPath} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("after provisioning: %v", err)
		}
		if len(b) == 0 {
			t.Fatalf("after provisioning, %s is empty", p)
		}
		state[p] = b
	}
	return state
}

func checkState(t *testing.T, when string, want map[string][]byte) {
	t.Helper()
	for p, w := range want {
		got, err := os.ReadFile(p)
		switch {
		case err != nil:
			t.Errorf("%s: %v", when, err)
		case !bytes.Equal(got, w) && p != journalPath:
			t.Errorf("%s, %s changed", when, p)
		case !bytes.HasPrefix(got, w):
			// The journal may grow (a later run appends), never lose records.
			t.Errorf("%s, the journal lost records", when)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// mustRun runs a program with fleetprov's environment variables cleared
// (they would override the config under test) and returns its stdout.
func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLEETPROV_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func mustDpkg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := runDpkg(args...); err != nil {
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// runDpkg runs dpkg, waiting while another dpkg or apt holds its lock
// (others may install packages on the same machine).
func runDpkg(args ...string) (string, error) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		out, err := exec.Command("dpkg", args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "lock") || time.Now().After(deadline) {
			return string(out), err
		}
		time.Sleep(2 * time.Second)
	}
}
