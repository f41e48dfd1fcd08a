//go:build cgo

package pkcs11

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/internal/buildtest"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
)

const fleetprovPkg = buildtest.Fleetprov

// fleetprov stays free of cgo and of the token store unless built with
// -tags pkcs11.
func TestFleetprovLinksPKCS11OnlyWithTag(t *testing.T) {
	buildtest.LinksOnlyWithTag(t, "pkcs11", "github.com/ThalesGroup/crypto11", "github.com/miekg/pkcs11")
}

// The binary users build with -tags pkcs11 provisions with the device key
// in the token; the default one refuses a pkcs11: key as a config error.
func TestFleetprovBuiltWithTag(t *testing.T) {
	tk := newToken(t)
	gobin := buildtest.GoTool(t)
	bin := t.TempDir()
	for _, b := range []struct{ tags, out string }{{"pkcs11", "fleetprov-pkcs11"}, {"", "fleetprov"}} {
		if out, err := exec.Command(gobin, "build", "-tags", b.tags, "-o", filepath.Join(bin, b.out), fleetprovPkg).CombinedOutput(); err != nil {
			t.Fatalf("go build -tags %q: %v\n%s", b.tags, err, out)
		}
	}
	c := startCloud(t)
	uri := tk.uri("device", nil)
	env := append(os.Environ(), "FLEETPROV_KEY_PATH="+uri)

	plain := exec.Command(filepath.Join(bin, "fleetprov"), "config", "check", "--config", c.config)
	plain.Env = env
	out, err := plain.CombinedOutput()
	want := "fleetprov: environment variable FLEETPROV_KEY_PATH names a pkcs11: key, but this fleetprov has no pkcs11 key store (it has: file, plugin): serve it with the fleetprov-keystore-pkcs11 plugin (write plugin:NAME/pkcs11:...), build fleetprov with -tags pkcs11, or use a key file path"
	if code := cloudtest.ExitCode(err); code != 2 || !strings.Contains(string(out), want) {
		t.Errorf("default build, config check: exit %d, want 2 and %q in:\n%s", code, want, out)
	}

	for _, args := range [][]string{{"config", "check"}, {"run"}, {"status"}} {
		cmd := exec.Command(filepath.Join(bin, "fleetprov-pkcs11"), append(args, "--config", c.config)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fleetprov %s: %v\n%s", args[0], err, out)
		}
		if args[0] == "status" && !strings.Contains(string(out), "key:         "+uri+"\n") {
			t.Errorf("status does not show the key URI:\n%s", out)
		}
	}
	cert := cloudtest.ReadCert(t, filepath.Join(c.dir, "device", "credentials", "certificate.pem"))
	if pub := tokenPublicKey(t, uri); !reflect.DeepEqual(cert.PublicKey, pub) {
		t.Error("the certificate is not for the token's key")
	}
	cloudtest.CheckNoDeviceKeyFile(t, c.dir)
}
