package pkcs11

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/config"
)

func TestParseURI(t *testing.T) {
	u, err := ParseURI("pkcs11:token=my%20token;object=device%3Bkey;id=%01%ff;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/fleetprov/pin")
	if err != nil {
		t.Fatal(err)
	}
	want := URI{Token: "my token", Object: "device;key", ID: []byte{1, 0xff}, Type: "private", ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "file:/etc/fleetprov/pin"}
	if u.Token != want.Token || u.Object != want.Object || !bytes.Equal(u.ID, want.ID) || u.Type != want.Type || u.ModulePath != want.ModulePath || u.PINSource != want.PINSource {
		t.Errorf("ParseURI = %+v, want %+v", *u, want)
	}
	// Formatting is canonical and parses back to the same key.
	s := u.String()
	if want := "pkcs11:token=my%20token;object=device%3Bkey;id=%01%FF;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/fleetprov/pin"; s != want {
		t.Errorf("String = %s\nwant     %s", s, want)
	}
	u2, err := ParseURI(s)
	if err != nil || u2.String() != s {
		t.Errorf("round trip: %v, %v", u2, err)
	}
	// env: PIN sources and file:/// are accepted too.
	for _, src := range []string{"env:TOKEN_PIN", "file:///etc/pin"} {
		if _, err := ParseURI("pkcs11:token=t;object=o?module-path=/m.so&pin-source=" + src); err != nil {
			t.Errorf("pin-source=%s: %v", src, err)
		}
	}
}

func TestParseURIErrors(t *testing.T) {
	const q = "?module-path=/m.so&pin-source=file:/p"
	for _, tc := range []struct{ uri, want string }{
		{"file:/x", `key URI "file:/x" is not a pkcs11: URI`},
		{"pkcs11:token=t;object=o?module-path=/m.so&pin-value=123456",
			"pkcs11 key URI holds pin-value: the PIN must not be written in config or the journal; put it in a file only the provisioning user can read and name that file with pin-source=file:/path"},
		{"pkcs11:token=t;slot-id=1;object=o" + q, `pkcs11 key URI "pkcs11:token=t;slot-id=1;object=o` + q + `": attribute slot-id is not supported: name the token with token= and the key with object= and/or id=`},
		{"pkcs11:token=t;object=o;object=p" + q, `pkcs11 key URI "pkcs11:token=t;object=o;object=p` + q + `": attribute object appears twice`},
		{"pkcs11:token=t;object=o;type=public" + q, `pkcs11 key URI "pkcs11:token=t;object=o;type=public` + q + `": type=public: a key URI names a private key: write type=private or leave type out`},
		{"pkcs11:object=o" + q, `pkcs11 key URI "pkcs11:object=o` + q + `": no token: add token=<the token's label>`},
		{"pkcs11:token=t" + q, `pkcs11 key URI "pkcs11:token=t` + q + `": names no key: add object=<the key's label> (and optionally id=)`},
		{"pkcs11:token=t;object=o?pin-source=file:/p", `pkcs11 key URI "pkcs11:token=t;object=o?pin-source=file:/p": no module-path: add ?module-path=/path/to/the/pkcs11/library.so`},
		{"pkcs11:token=t;object=o?module-path=m.so&pin-source=file:/p", `pkcs11 key URI "pkcs11:token=t;object=o?module-path=m.so&pin-source=file:/p": module-path m.so is not an absolute path`},
		{"pkcs11:token=t;object=o?module-path=/m.so", `pkcs11 key URI "pkcs11:token=t;object=o?module-path=/m.so": no pin-source: add &pin-source=file:/path/to/pin-file (or env:VARIABLE)`},
		{"pkcs11:token=t;object=o?module-path=/m.so&pin-source=file:pin", `pkcs11 key URI "pkcs11:token=t;object=o?module-path=/m.so&pin-source=file:pin": pin-source file:pin does not name an absolute path: write file:/path/to/pin-file`},
		{"pkcs11:token=t;object=o?module-path=/m.so&pin-source=|cat", `pkcs11 key URI "pkcs11:token=t;object=o?module-path=/m.so&pin-source=|cat": pin-source |cat is not supported: use file:/path/to/pin-file or env:VARIABLE`},
		{"pkcs11:token=t;object=o?module-path=/m.so&pin-source=env:", `pkcs11 key URI "pkcs11:token=t;object=o?module-path=/m.so&pin-source=env:": pin-source env: names no variable: write env:VARIABLE`},
		{"pkcs11:token=t;object=o;id=%1" + q, `pkcs11 key URI "pkcs11:token=t;object=o;id=%1` + q + `": attribute id: "%1" has a % not followed by two hex digits`},
		{"pkcs11:token=t;object=o" + q + "&module-name=softhsm2", `pkcs11 key URI "pkcs11:token=t;object=o` + q + `&module-name=softhsm2": query attribute module-name is not supported: use module-path and pin-source`},
	} {
		_, err := ParseURI(tc.uri)
		if err == nil || err.Error() != tc.want {
			t.Errorf("ParseURI(%s):\n got %v\nwant %s", tc.uri, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "123456") {
			t.Errorf("message shows the PIN: %v", err)
		}
	}
}

func TestPINSources(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "pin")
	if err := os.WriteFile(good, []byte("4711\r\nsecond line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pin, err := (&URI{PINSource: "file:" + good}).PIN()
	if err != nil || pin != "4711" {
		t.Errorf("PIN from file = %q, %v; want 4711", pin, err)
	}
	t.Setenv("FLEETPROV_TEST_PIN", "8642")
	pin, err = (&URI{PINSource: "env:FLEETPROV_TEST_PIN"}).PIN()
	if err != nil || pin != "8642" {
		t.Errorf("PIN from env = %q, %v; want 8642", pin, err)
	}

	open := filepath.Join(dir, "open")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(open, []byte("4711\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte("\nx\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ src, want string }{
		{"file:" + dir + "/missing", "pin-source file:" + dir + "/missing: the file does not exist: write the token's user PIN into it (mode 0600)"},
		{"file:" + open, "pin-source file:" + open + ": the file is readable by every user (mode 0644): chmod 0600 it"},
		{"file:" + empty, "pin-source file:" + empty + ": the file's first line is empty: write the token's user PIN into it"},
		{"env:FLEETPROV_TEST_NO_SUCH_PIN", "pin-source env:FLEETPROV_TEST_NO_SUCH_PIN: the environment variable FLEETPROV_TEST_NO_SUCH_PIN is unset or empty: set it to the token's user PIN"},
	} {
		_, err := (&URI{PINSource: tc.src}).PIN()
		if err == nil || err.Error() != tc.want {
			t.Errorf("PIN(%s):\n got %v\nwant %s", tc.src, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "4711") {
			t.Errorf("message shows the PIN: %v", err)
		}
	}
}

// The sample in configs/ names its key with a URI this store accepts.
func TestSampleConfigURI(t *testing.T) {
	c, err := config.Load(config.LoadOptions{Path: filepath.Join("..", "..", "..", "configs", "pkcs11.yaml"), SkipFileChecks: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.KeyURI, "plugin:pkcs11/pkcs11:") || c.GreengrassKeyPath() != strings.TrimPrefix(c.KeyURI, "plugin:pkcs11/") {
		t.Errorf("sample key %q, Greengrass gets %q", c.KeyURI, c.GreengrassKeyPath())
	}
	if len(c.Plugins) != 1 || c.Plugins[0].Name != "pkcs11" {
		t.Errorf("sample plugins %+v, want one named pkcs11", c.Plugins)
	}
	u, err := ParseURI(tokenURI(c.KeyURI))
	if err != nil {
		t.Fatal(err)
	}
	if u.Token != "fleet" || u.Object != "device" || u.PINSource != "file:/etc/fleetprov/pin" {
		t.Errorf("sample key URI %+v", *u)
	}
}
