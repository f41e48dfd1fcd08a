package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var provisioned = Provisioned{
	ThingName:           "gg_a2b9d25afdf9",
	CertificateFilePath: "/var/lib/greengrass/credentials/certificate.pem",
	PrivateKeyPath:      "/var/lib/greengrass/credentials/priv_key",
	RootCAPath:          "/var/lib/greengrass/credentials/AmazonRootCA.pem",
	IoTDataEndpoint:     "aaaaaaaaaaaaaa-ats.iot.us-east-1.amazonaws.com",
	IoTCredEndpoint:     "cccccccccccccc.credentials.iot.us-east-1.amazonaws.com",
}

// commentLines returns the comment part of every line that has one.
func commentLines(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if i := strings.Index(line, "#"); i >= 0 {
			out = append(out, strings.TrimSpace(line[i:]))
		}
	}
	return out
}

func TestWriteBackKeepsEverythingElse(t *testing.T) {
	for _, name := range []string{"greengrass-lite-config.yaml", "seed-config.yaml"} {
		t.Run(name, func(t *testing.T) {
			orig, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, orig, 0o640); err != nil {
				t.Fatal(err)
			}
			if err := WriteBack(path, provisioned); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			info, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if info.Mode().Perm() != 0o640 {
				t.Errorf("mode = %v, want 0640", info.Mode().Perm())
			}

			// Every comment is still there, in order.
			wantC, gotC := commentLines(string(orig)), commentLines(string(got))
			if strings.Join(wantC, "\n") != strings.Join(gotC, "\n") {
				t.Errorf("comments changed:\n got %q\nwant %q", gotC, wantC)
			}

			// Only the six provisioned lines differ; they keep quotes and comments.
			ol, gl := strings.Split(string(orig), "\n"), strings.Split(string(got), "\n")
			if len(ol) != len(gl) {
				t.Fatalf("line count %d -> %d:\n%s", len(ol), len(gl), got)
			}
			changed := map[string]string{
				`  thingName: ""`:                             `  thingName: "gg_a2b9d25afdf9"`,
				`  certificateFilePath: ""`:                   `  certificateFilePath: "/var/lib/greengrass/credentials/certificate.pem"`,
				`  privateKeyPath: ""`:                        `  privateKeyPath: "/var/lib/greengrass/credentials/priv_key"`,
				`  rootCaPath: ""`:                            `  rootCaPath: "/var/lib/greengrass/credentials/AmazonRootCA.pem"`,
				`      iotCredEndpoint: ""`:                   `      iotCredEndpoint: "cccccccccccccc.credentials.iot.us-east-1.amazonaws.com"`,
				`      iotDataEndpoint: ""`:                   `      iotDataEndpoint: "aaaaaaaaaaaaaa-ats.iot.us-east-1.amazonaws.com"`,
				`      iotDataEndpoint: "aaaaaaaaaaaaaa-ats.`: ``, // fleet_provisioning's own stays
			}
			n := 0
			for i := range ol {
				if ol[i] == gl[i] {
					continue
				}
				code, comment, _ := strings.Cut(ol[i], " #")
				want, ok := changed[code]
				if !ok || want == "" || gl[i] != want+" #"+comment {
					t.Errorf("line %d changed:\n%q\n->\n%q", i+1, ol[i], gl[i])
				}
				n++
			}
			if n != 6 {
				t.Errorf("%d lines changed, want 6:\n%s", n, got)
			}

			// And the result loads with the values set.
			c, err := Load(LoadOptions{Path: path, SkipFileChecks: true})
			if err != nil {
				t.Fatal(err)
			}
			if !IsProvisioned(c) || c.ThingName != provisioned.ThingName || c.CertificateFilePath != provisioned.CertificateFilePath ||
				c.PrivateKeyPath != provisioned.PrivateKeyPath || c.SystemRootCAPath != provisioned.RootCAPath {
				t.Errorf("after WriteBack: %+v", c)
			}
		})
	}
}

func TestWriteBackCreatesMissingKeys(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty file", "", `system:
  thingName: "gg_a2b9d25afdf9"
  privateKeyPath: "/var/lib/greengrass/credentials/priv_key"
  rootCaPath: "/var/lib/greengrass/credentials/AmazonRootCA.pem"
  certificateFilePath: "/var/lib/greengrass/credentials/certificate.pem"
services:
  aws.greengrass.NucleusLite:
    configuration:
      iotDataEndpoint: "aaaaaaaaaaaaaa-ats.iot.us-east-1.amazonaws.com"
      iotCredEndpoint: "cccccccccccccc.credentials.iot.us-east-1.amazonaws.com"
`},
		{"null parents, four-space indent", `# head
system:
    rootPath: /r   # keep
services:
    other: 1
    aws.greengrass.NucleusLite:
`, `# head
system:
    rootPath: /r # keep
    thingName: "gg_a2b9d25afdf9"
    privateKeyPath: "/var/lib/greengrass/credentials/priv_key"
    rootCaPath: "/var/lib/greengrass/credentials/AmazonRootCA.pem"
    certificateFilePath: "/var/lib/greengrass/credentials/certificate.pem"
services:
    other: 1
    aws.greengrass.NucleusLite:
        configuration:
            iotDataEndpoint: "aaaaaaaaaaaaaa-ats.iot.us-east-1.amazonaws.com"
            iotCredEndpoint: "cccccccccccccc.credentials.iot.us-east-1.amazonaws.com"
`},
		{"plain and single-quoted values keep their style", "system:\n  thingName: old\n  certificateFilePath: 'x'\n  privateKeyPath:\n  rootCaPath: ~\n", `system:
  thingName: gg_a2b9d25afdf9
  certificateFilePath: '/var/lib/greengrass/credentials/certificate.pem'
  privateKeyPath: /var/lib/greengrass/credentials/priv_key
  rootCaPath: /var/lib/greengrass/credentials/AmazonRootCA.pem
services:
  aws.greengrass.NucleusLite:
    configuration:
      iotDataEndpoint: "aaaaaaaaaaaaaa-ats.iot.us-east-1.amazonaws.com"
      iotCredEndpoint: "cccccccccccccc.credentials.iot.us-east-1.amazonaws.com"
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(t.TempDir(), "config.yaml"), tt.in)
			if err := WriteBack(path, provisioned); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			if string(got) != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestWriteBackPlainValueThatLooksLikeANumberIsQuoted(t *testing.T) {
	path := writeFile(t, filepath.Join(t.TempDir(), "config.yaml"), "system:\n  thingName: old\n")
	v := provisioned
	v.ThingName = "12345"
	if err := WriteBack(path, v); err != nil {
		t.Fatal(err)
	}
	c, err := Load(LoadOptions{Path: path, SkipFileChecks: true})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if c.ThingName != "12345" || !strings.Contains(string(got), `thingName: "12345"`) {
		t.Errorf("thingName %q in:\n%s", c.ThingName, got)
	}
}

func TestWriteBackFailsWithoutTouching(t *testing.T) {
	t.Run("read-only file", func(t *testing.T) {
		dir := t.TempDir()
		path := writeFile(t, filepath.Join(dir, "config.yaml"), "system:\n  thingName: \"\"\n")
		chmod(t, path, 0o444)
		err := WriteBack(path, provisioned)
		want := "update config " + path + ": the file is read-only: make it writable (chmod u+w) so the provisioned values can be saved"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %s", err, want)
		}
		got, _ := os.ReadFile(path)
		info, _ := os.Stat(path)
		if string(got) != "system:\n  thingName: \"\"\n" || info.Mode().Perm() != 0o444 {
			t.Errorf("file changed: %v %q", info.Mode(), got)
		}
		assertOnlyFiles(t, dir, "config.yaml")
	})
	t.Run("missing file", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "config.yaml")
		err := WriteBack(path, provisioned)
		want := "update config " + path + ": lstat " + path + ": no such file or directory"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %s", err, want)
		}
		assertOnlyFiles(t, dir)
	})
	t.Run("not YAML", func(t *testing.T) {
		dir := t.TempDir()
		path := writeFile(t, filepath.Join(dir, "config.yaml"), "a: [\n")
		err := WriteBack(path, provisioned)
		if err == nil || !strings.HasPrefix(err.Error(), "update config "+path+": not valid YAML: ") {
			t.Fatalf("err = %v", err)
		}
		got, _ := os.ReadFile(path)
		if string(got) != "a: [\n" {
			t.Errorf("file changed: %q", got)
		}
		assertOnlyFiles(t, dir, "config.yaml")
	})
	t.Run("system is not a mapping", func(t *testing.T) {
		dir := t.TempDir()
		path := writeFile(t, filepath.Join(dir, "config.yaml"), "x: 1\nsystem: [a]\n")
		err := WriteBack(path, provisioned)
		want := "update config " + path + ": system (line 2) is not a mapping, so thingName cannot be set in it"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %s", err, want)
		}
	})
}

// Writing empty values clears them (reset): the sample comes back byte for
// byte, and keys that were never there are not created.
func TestWriteBackEmptyClears(t *testing.T) {
	orig, err := os.ReadFile("testdata/greengrass-lite-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, filepath.Join(t.TempDir(), "config.yaml"), string(orig))
	if err := WriteBack(path, provisioned); err != nil {
		t.Fatal(err)
	}
	if err := WriteBack(path, Provisioned{}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if string(got) != string(orig) {
		t.Errorf("after clearing:\n%s\nwant:\n%s", got, orig)
	}
	c, err := Load(LoadOptions{Path: path, SkipFileChecks: true})
	if err != nil || IsProvisioned(c) {
		t.Errorf("still provisioned: %v %v", c, err)
	}

	path = writeFile(t, filepath.Join(t.TempDir(), "config.yaml"), "system:\n  thingName: x # keep\n")
	if err := WriteBack(path, Provisioned{}); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(path)
	if want := "system:\n  thingName: \"\" # keep\n"; string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestWriteBackFollowsSymlink(t *testing.T) {
	dir := t.TempDir()
	target := writeFile(t, filepath.Join(dir, "real.yaml"), "system: {}\n")
	link := filepath.Join(dir, "config.yaml")
	if err := os.Symlink("real.yaml", link); err != nil {
		t.Fatal(err)
	}
	if err := WriteBack(link, provisioned); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("link replaced: %v %v", fi, err)
	}
	got, _ := os.ReadFile(target)
	if !strings.Contains(string(got), "gg_a2b9d25afdf9") {
		t.Errorf("target not updated:\n%s", got)
	}
}

func TestIsProvisioned(t *testing.T) {
	if IsProvisioned(nil) || IsProvisioned(&Config{}) || !IsProvisioned(&Config{CertificateFilePath: "/c.pem"}) {
		t.Error("IsProvisioned does not follow certificateFilePath")
	}
}

func assertOnlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("directory holds %v, want %v", got, names)
	}
}
