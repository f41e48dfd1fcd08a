package tpm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fleetprov/fleetprov/internal/buildtest"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
)

const fleetprovPkg = buildtest.Fleetprov

var (
	binMu  sync.Mutex
	binDir string
)

// removeBinaries deletes what the tests built, once they are done.
func removeBinaries() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// fleetprovBinary builds cmd/fleetprov with tags, without cgo.
func fleetprovBinary(t *testing.T, tags string) string {
	t.Helper()
	gobin := buildtest.GoTool(t)
	binMu.Lock()
	defer binMu.Unlock()
	if binDir == "" {
		d, err := os.MkdirTemp("", "fleetprov-tpm")
		if err != nil {
			t.Fatal(err)
		}
		binDir = d
	}
	out := filepath.Join(binDir, "fleetprov-"+tags)
	cmd := exec.Command(gobin, "build", "-tags", tags, "-o", out, fleetprovPkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags %q: %v\n%s", tags, err, b)
	}
	return out
}

// fleetprov stays free of the TPM store unless built with -tags tpm.
func TestFleetprovLinksTPMOnlyWithTag(t *testing.T) {
	buildtest.LinksOnlyWithTag(t, "tpm", "github.com/google/go-tpm/tpm2", "github.com/fleetprov/fleetprov/plugins/keystore/tpm")
}

// The binary users build with -tags tpm (no cgo needed) provisions with
// the device key in the TPM; the default one refuses a TPM key as a config
// error that says how to get one that can.
func TestFleetprovBuiltWithTag(t *testing.T) {
	sw := startSoftTPM(t)
	withTPM := fleetprovBinary(t, "tpm")
	plain := fleetprovBinary(t, "")
	c := startCloud(t)
	env := append(os.Environ(), "FLEETPROV_KEY_PATH=handle:0x81000010", EnvDevice+"="+sw.device)

	cmd := exec.Command(plain, "config", "check", "--config", c.config)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	want := "fleetprov: environment variable FLEETPROV_KEY_PATH names a TPM key (handle:), but this fleetprov has no TPM key store (it has: file, plugin): build fleetprov with -tags tpm, or use a key file path\n"
	if code := cloudtest.ExitCode(err); code != 2 || !strings.Contains(string(out), want) {
		t.Errorf("default build, config check: exit %d, want 2 and %q in:\n%s", code, want, out)
	}

	for _, args := range [][]string{{"config", "check"}, {"run"}, {"status"}} {
		cmd := exec.Command(withTPM, append(args, "--config", c.config)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fleetprov %s: %v\n%s", args[0], err, out)
		}
	}
	if !equalKeys(c.deviceCert(t).PublicKey, sw.publicKey(t, "0x81000010")) {
		t.Error("the certificate is not for the key tpm2_readpublic reads at 0x81000010")
	}

	// A URI the store refuses is a config error, found before the run.
	cmd = exec.Command(withTPM, "config", "check", "--config", c.config)
	cmd.Env = append(env, "FLEETPROV_KEY_PATH=handle:0x81000010?pass")
	out, err = cmd.CombinedOutput()
	want = "fleetprov: environment variable FLEETPROV_KEY_PATH handle:0x81000010?pass: ?pass asks for the key's password at a prompt, which fleetprov cannot show: write tpm:handle=0x81000010?auth-source=file:/path/to/password instead\n"
	if code := cloudtest.ExitCode(err); code != 2 || !strings.Contains(string(out), want) {
		t.Errorf("config check with ?pass: exit %d, want 2 and %q in:\n%s", code, want, out)
	}
}
