// Package softhsmtest gives tests a real PKCS#11 token: Debian's SoftHSM2,
// with its own configuration and token directory under a temporary
// directory, and a token initialised with softhsm2-util.
//
// When softhsm2 is not installed a test calling Require is skipped with a
// message saying so, unless FLEETPROV_REQUIRE_TOOLS=1 (as in CI), where a
// missing tool is a failure instead.
package softhsmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// modules are where distributions put SoftHSM2's PKCS#11 library.
var modules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// Find returns softhsm2-util and the PKCS#11 module, or an error saying
// what is missing.
func Find() (util, module string, err error) {
	util, err = exec.LookPath("softhsm2-util")
	if err != nil {
		return "", "", fmt.Errorf("softhsm2-util not found on PATH (Debian: apt-get install softhsm2)")
	}
	for _, m := range modules {
		if _, err := os.Stat(m); err == nil {
			return util, m, nil
		}
	}
	return "", "", fmt.Errorf("SoftHSM2's PKCS#11 module libsofthsm2.so not found (Debian: apt-get install softhsm2)")
}

// Require skips the test when SoftHSM2 is missing, or fails it when
// FLEETPROV_REQUIRE_TOOLS=1. It returns the module's path.
func Require(t testing.TB) string {
	t.Helper()
	_, module, err := Find()
	if err != nil {
		if os.Getenv("FLEETPROV_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%v; FLEETPROV_REQUIRE_TOOLS=1 makes this a failure", err)
		}
		t.Skipf("skipping: %v", err)
	}
	return module
}

// Config writes a SoftHSM2 configuration keeping tokens in dir/tokens and
// returns its path: the value for SOFTHSM2_CONF.
func Config(dir string) (string, error) {
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return "", err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	return conf, os.WriteFile(conf, []byte(body), 0o600)
}

// InitToken initialises a free slot of the SoftHSM2 configured by conf as a
// token labelled label, with user PIN pin.
func InitToken(conf, label, pin string) error {
	util, _, err := Find()
	if err != nil {
		return err
	}
	cmd := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", "so-"+pin)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("softhsm2-util --init-token --label %s: %v\n%s", label, err, out)
	}
	return nil
}

// WritePIN writes pin into dir/name with mode 0600 and returns the file's
// path.
func WritePIN(dir, name, pin string) (string, error) {
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, []byte(pin+"\n"), 0o600)
}

// ImportKey stores the PKCS#8 PEM private key in file, and its public half,
// in the token labelled token, under the object label and the hex id.
func ImportKey(conf, token, pin, file, label, id string) error {
	util, _, err := Find()
	if err != nil {
		return err
	}
	cmd := exec.Command(util, "--import", file, "--token", token, "--label", label, "--id", id, "--pin", pin)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("softhsm2-util --import %s --token %s: %v\n%s", file, token, err, out)
	}
	return nil
}
