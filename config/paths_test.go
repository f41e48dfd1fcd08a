package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/failure"
)

// TestPathClashesAndKinds: every path a run would write where it must not
// is refused by Load with one line naming both keys (or the key) and the
// path, before anything is written; with SkipFileChecks too, since reset
// and status act on these paths.
func TestPathClashesAndKinds(t *testing.T) {
	type tc struct {
		name    string
		set     map[string]string // raw YAML values
		args    []string
		prepare func(t *testing.T, dir string)
		want    string // {file} and {dir} are replaced
	}
	const fpk = "config {file}: services.aws.greengrass.fleet_provisioning.configuration."
	mkdir := func(names ...string) func(*testing.T, string) {
		return func(t *testing.T, dir string) {
			for _, n := range names {
				if err := os.MkdirAll(filepath.Join(dir, n), 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	symlink := func(target, name string) func(*testing.T, string) {
		return func(t *testing.T, dir string) {
			if err := os.Symlink(filepath.Join(dir, target), filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []tc{
		{name: "certPath is claimCertPath", set: map[string]string{"certPath": `"claim.crt"`},
			want: "config {file}: certPath and claimCertPath both name {dir}/claim.crt: fleetprov would write the device certificate over the claim certificate; give each its own path"},
		{name: "keyPath is claimKeyPath", set: map[string]string{"keyPath": `"claim.key"`},
			want: "config {file}: keyPath and claimKeyPath both name {dir}/claim.key: fleetprov would write the device key over the claim key; give each its own path"},
		{name: "csrPath is rootCaPath", set: map[string]string{"csrPath": `"AmazonRootCA1.pem"`},
			want: "config {file}: csrPath and rootCaPath both name {dir}/AmazonRootCA1.pem: fleetprov would write the CSR over the root CA; give each its own path"},
		{name: "journalPath is claimKeyPath", set: map[string]string{"journalPath": `"claim.key"`},
			want: "config {file}: journalPath and claimKeyPath both name {dir}/claim.key: fleetprov would write the journal over the claim key; give each its own path"},
		{name: "root CA copy is rootCaPath", set: map[string]string{"outputDir": `"."`, "rootCaPath": `"AmazonRootCA.pem"`},
			prepare: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "AmazonRootCA.pem"), "x") },
			want:    "config {file}: the root CA copy in outputDir and rootCaPath both name {dir}/AmazonRootCA.pem: fleetprov would write the root CA copy over the root CA; give each its own path"},
		{name: "deviceConfiguration.json is claimCertPath", set: map[string]string{"certPath": `"cert.pem"`, "claimCertPath": `"deviceConfiguration.json"`},
			prepare: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "deviceConfiguration.json"), "x") },
			want:    "config {file}: deviceConfiguration.json next to certPath and claimCertPath both name {dir}/deviceConfiguration.json: fleetprov would write the device configuration over the claim certificate; give each its own path"},
		{name: "certPath is the config file", set: map[string]string{"certPath": `"config.yaml"`},
			want: "config {file}: certPath and the config file both name {file}: fleetprov would write the device certificate over the config file; give each its own path"},
		{name: "keyPath is certPath", set: map[string]string{"certPath": `"out/device.pem"`, "keyPath": `"out/device.pem"`},
			want: "config {file}: keyPath and certPath both name {dir}/out/device.pem: fleetprov would write the device key over the device certificate; give each its own path"},
		{name: "journalPath is csrPath", set: map[string]string{"csrPath": `"out/j"`, "journalPath": `"out/j"`},
			want: "config {file}: journalPath and csrPath both name {dir}/out/j: fleetprov would write the journal over the CSR; give each its own path"},
		{name: "clash through a linked parent", set: map[string]string{"certPath": `"alias/claim.crt"`}, prepare: symlink(".", "alias"),
			want: "config {file}: certPath {dir}/alias/claim.crt and claimCertPath {dir}/claim.crt name the same file: fleetprov would write the device certificate over the claim certificate; give each its own path"},
		{name: "claim certificate linked to certPath", set: map[string]string{"outputDir": `"out"`, "claimCertPath": `"claim-link.crt"`},
			prepare: func(t *testing.T, dir string) {
				mkdir("out")(t, dir)
				writeFile(t, filepath.Join(dir, "out", "certificate.pem"), "x")
				symlink("out/certificate.pem", "claim-link.crt")(t, dir)
			},
			want: "config {file}: certPath {dir}/out/certificate.pem and claimCertPath {dir}/claim-link.crt name the same file: fleetprov would write the device certificate over the claim certificate; give each its own path"},
		{name: "clash set by a flag", args: []string{"-c", "{dir}/out/certificate.pem"}, set: map[string]string{"outputDir": `"out"`},
			want: "config {file}: certPath and flag -c/--claim-cert (claimCertPath) both name {dir}/out/certificate.pem: fleetprov would write the device certificate over the claim certificate; give each its own path"},
		{name: "outputDir inside stateScriptsDir", set: map[string]string{"stateScriptsDir": `"scripts"`, "outputDir": `"scripts/creds"`}, prepare: mkdir("scripts"),
			want: "config {file}: certPath {dir}/scripts/creds/certificate.pem is inside stateScriptsDir {dir}/scripts: keep fleetprov's files out of the directory that holds the state scripts; set certPath elsewhere"},
		{name: "journal in pluginDir", set: map[string]string{"pluginDir": `"plugins"`, "journalPath": `"plugins/journal"`},
			want: "config {file}: journalPath {dir}/plugins/journal is inside pluginDir {dir}/plugins: keep fleetprov's files out of the directory that holds the plugins; set journalPath elsewhere"},
		{name: "journalPath a device", set: map[string]string{"journalPath": `"/dev/zero"`},
			want: fpk + "journalPath /dev/zero is a character device, not a regular file: set journalPath to a file of fleetprov's own, such as {dir}/gg/fleetprov/journal"},
		{name: "journalPath a directory", set: map[string]string{"journalPath": `"out"`}, prepare: mkdir("out"),
			want: fpk + "journalPath {dir}/out is a directory, not a regular file: set journalPath to a file of fleetprov's own, such as {dir}/gg/fleetprov/journal"},
		{name: "journalPath a symbolic link", set: map[string]string{"journalPath": `"journal"`}, prepare: symlink("notes.txt", "journal"),
			want: fpk + "journalPath {dir}/journal is a symbolic link, not a regular file: set journalPath to a file of fleetprov's own, such as {dir}/gg/fleetprov/journal"},
		{name: "outputDir a regular file", set: map[string]string{"outputDir": `"claim.crt"`},
			want: fpk + "outputDir {dir}/claim.crt is a regular file, not a directory: name a directory, or a path where one can be created"},
		{name: "outputDir under a regular file", set: map[string]string{"outputDir": `"claim.crt/creds"`},
			want: fpk + "outputDir {dir}/claim.crt/creds cannot be created: {dir}/claim.crt is a regular file, not a directory: name a directory, or a path where one can be created"},
		{name: "certPath in a regular file", set: map[string]string{"certPath": `"claim.key/cert.pem"`},
			want: fpk + "certPath {dir}/claim.key/cert.pem is in {dir}/claim.key, which is a regular file, not a directory: name a directory, or a path where one can be created"},
		{name: "outputDir a symbolic link", set: map[string]string{"outputDir": `"creds"`}, prepare: func(t *testing.T, dir string) { mkdir("real")(t, dir); symlink("real", "creds")(t, dir) },
			want: fpk + "outputDir {dir}/creds is a symbolic link (to {dir}/real): name the directory itself; fleetprov does not write credentials or change owners through a link"},
		{name: "keyPath's directory a symbolic link", set: map[string]string{"keyPath": `"keys/priv_key"`}, prepare: func(t *testing.T, dir string) { mkdir("real")(t, dir); symlink("real", "keys")(t, dir) },
			want: fpk + "keyPath {dir}/keys/priv_key is in {dir}/keys, which is a symbolic link (to {dir}/real): name the directory itself; fleetprov does not write credentials or change owners through a link"},
		{name: "certPath a directory", set: map[string]string{"certPath": `"out"`}, prepare: mkdir("out"),
			want: fpk + "certPath {dir}/out is a directory, not a file: name a file of fleetprov's own"},
		{name: "csrPath a device", set: map[string]string{"csrPath": `"/dev/null"`},
			want: fpk + "csrPath /dev/null is a character device, not a file: name a file of fleetprov's own"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := newPKI(t, dir)
			writeFile(t, filepath.Join(dir, "notes.txt"), "x")
			if c.prepare != nil {
				c.prepare(t, dir)
			}
			keys := goodKeys(p)
			keys["outputDir"] = q(filepath.Join(dir, "gg", "credentials"))
			for k, v := range c.set {
				keys[k] = v
			}
			file := writeFile(t, filepath.Join(dir, "config.yaml"), fp(filepath.Join(dir, "gg"), keys))
			before := snapshot(t, dir)
			want := strings.NewReplacer("{file}", file, "{dir}", dir).Replace(c.want)
			for _, skip := range []bool{false, true} {
				opts := LoadOptions{Path: file, SkipFileChecks: skip}
				if c.args != nil {
					args := make([]string, len(c.args))
					for i, a := range c.args {
						args[i] = strings.ReplaceAll(a, "{dir}", dir)
					}
					opts.Flags = parseFlags(t, args...)
				}
				_, err := Load(opts)
				var ue *failure.UsageError
				if !errors.As(err, &ue) {
					t.Fatalf("SkipFileChecks=%v: Load = %v, want a usage error", skip, err)
				}
				if err.Error() != want {
					t.Errorf("SkipFileChecks=%v:\n got %s\nwant %s", skip, err, want)
				}
			}
			if after := snapshot(t, dir); after != before {
				t.Errorf("Load changed files:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// snapshot lists every entry under dir with its mode and size.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d\n", path, fi.Mode(), fi.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// A layout without clashes loads: links among the parents of outputs, and
// a claim certificate reached through a link, are fine.
func TestPathsWithLinksThatDoNotClash(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "data"), filepath.Join(dir, "gg")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(p.cert, filepath.Join(dir, "claim-link.crt")); err != nil {
		t.Fatal(err)
	}
	keys := goodKeys(p)
	keys["claimCertPath"] = q(filepath.Join(dir, "claim-link.crt"))
	keys["outputDir"] = q(filepath.Join(dir, "gg", "credentials"))
	c, err := Load(LoadOptions{Path: writeFile(t, filepath.Join(dir, "config.yaml"), fp(filepath.Join(dir, "gg"), keys))})
	if err != nil {
		t.Fatal(err)
	}
	if c.OutputDir != filepath.Join(dir, "gg", "credentials") {
		t.Errorf("outputDir %s", c.OutputDir)
	}
}
