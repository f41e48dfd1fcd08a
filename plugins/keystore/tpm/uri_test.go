package tpm

import (
	"path/filepath"
	"testing"

	"github.com/fleetprov/fleetprov/config"
)

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want URI
	}{
		// Greengrass lite's forms, as its OpenSSL provider reads them.
		{"handle:0x81000002", URI{Handle: 0x81000002, Greengrass: true}},
		{"handle:81000002", URI{Handle: 0x81000002, Greengrass: true}},
		{"handle:0X8100000A", URI{Handle: 0x8100000a, Greengrass: true}},
		{"tpm:handle=0x81000010", URI{Handle: 0x81000010}},
		{"tpm:", URI{}},
		{"tpm:?device=/dev/tpm0", URI{Device: "/dev/tpm0"}},
		{"tpm:handle=0x81000010?device=/dev/tpm0&auth-source=file:/etc/fleetprov/tpm-auth", URI{Handle: 0x81000010, Device: "/dev/tpm0", AuthSource: "file:/etc/fleetprov/tpm-auth"}},
		{"tpm:handle=0x81000010?device=swtpm:127.0.0.1:2321&auth-source=env:KEY_AUTH", URI{Handle: 0x81000010, Device: "swtpm:127.0.0.1:2321", AuthSource: "env:KEY_AUTH"}},
	} {
		got, err := ParseURI(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if *got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.in, *got, tc.want)
		}
	}
}

func TestParseURIErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"handle:0x81000002?pass", "handle:0x81000002?pass: ?pass asks for the key's password at a prompt, which fleetprov cannot show: write tpm:handle=0x81000002?auth-source=file:/path/to/password instead"},
		{"handle:0x81000002?other", "handle:0x81000002?other: unknown suffix ?other: write handle:0x81000002 (or tpm:handle=0x81000002?... for fleetprov's options)"},
		{"handle:", `handle:: handle "" is not a hexadecimal number: write a persistent handle such as 0x81000002`},
		{"handle:0xZZ", `handle:0xZZ: handle "0xZZ" is not a hexadecimal number: write a persistent handle such as 0x81000002`},
		{"handle:0x80000001", "handle:0x80000001: handle 0x80000001 is not a persistent handle (0x81000000 to 0x81ffffff): keys fleetprov uses must be persisted; owner keys go at 0x81000000 to 0x817fffff"},
		{"tpm:object=device", `tpm key URI "tpm:object=device": unknown attribute "object": the only one is handle=0x...`},
		{"tpm:handle=0x81000002;handle=0x81000003", `tpm key URI "tpm:handle=0x81000002;handle=0x81000003": handle is given twice: give it once`},
		{"tpm:handle=0x81000002?module=x", `tpm key URI "tpm:handle=0x81000002?module=x": unknown option "module": the options are device and auth-source`},
		{"tpm:handle=0x81000002?device=tpmrm0", `tpm key URI "tpm:handle=0x81000002?device=tpmrm0": TPM device "tpmrm0" is neither an absolute path nor swtpm:HOST:PORT: write /dev/tpmrm0`},
		{"tpm:handle=0x81000002?device=swtpm:2321", `tpm key URI "tpm:handle=0x81000002?device=swtpm:2321": TPM device "swtpm:2321": write swtpm:HOST:PORT (the software TPM's command port)`},
		{"tpm:handle=0x81000002?auth-source=hunter2", "tpm key URI handle=0x81000002: auth-source is neither file:/absolute/path nor env:VARIABLE (not shown: it may be the password itself): put the password in a file only the provisioning user can read and name it with auth-source=file:/path"},
		{"tpm:handle=0x81000002?auth-value=hunter2", "tpm key URI handle=0x81000002 holds auth-value: the password must not be written in config; put it in a file only the provisioning user can read and name it with auth-source=file:/path"},
		{"pkcs11:token=x", `"pkcs11:token=x" is not a TPM key URI: write handle:0x81000002 or tpm:handle=0x81000002`},
	} {
		_, err := ParseURI(tc.in)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s:\n got %v\nwant %s", tc.in, err, tc.want)
		}
	}
}

func TestGreengrassKeyPath(t *testing.T) {
	for in, want := range map[string]string{
		"handle:81000002": "handle:0x81000002",
		"tpm:handle=0x8100001a?auth-source=file:/a&device=/dev/tpm0": "handle:0x8100001a",
	} {
		u, err := ParseURI(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := u.GreengrassKeyPath(); got != want {
			t.Errorf("%s: GreengrassKeyPath() = %s, want %s", in, got, want)
		}
	}
}

// The sample in configs/ names its keys with URIs this store accepts, and
// Greengrass gets the device key as handle:.
func TestSampleConfig(t *testing.T) {
	c, err := config.Load(config.LoadOptions{Path: filepath.Join("..", "..", "..", "configs", "tpm.yaml"), SkipFileChecks: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, uri := range []string{c.KeyURI, c.ClaimKeyPath} {
		if _, err := ParseURI(uri); err != nil {
			t.Error(err)
		}
	}
	if c.KeyURI != "tpm:handle=0x81000002" || c.GreengrassKeyPath() != "handle:0x81000002" || c.ClaimKeyPath != "handle:0x81000000" {
		t.Errorf("sample: key %q (Greengrass gets %q), claim key %q", c.KeyURI, c.GreengrassKeyPath(), c.ClaimKeyPath)
	}
}
