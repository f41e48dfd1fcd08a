package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/atomicfile/atomicfiletest"
)

// TestResetSyncsEachDirectoryItMovedIn: reset's moves are renames, which
// are only durable once the directory holding them is fsynced. Each such
// directory is synced once, after its moves, however many files it held.
func TestResetSyncsEachDirectoryItMovedIn(t *testing.T) {
	root := t.TempDir()
	out := filepath.Join(root, "credentials")
	csrDir := filepath.Join(root, "requests")
	journalDir := filepath.Join(root, "state")
	for _, d := range []string{out, csrDir, journalDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := []string{
		filepath.Join(out, "certificate.pem"),
		filepath.Join(out, "priv_key"),
		filepath.Join(out, "AmazonRootCA.pem"),
		filepath.Join(out, "deviceConfiguration.json"),
		filepath.Join(csrDir, "device.csr"),
		filepath.Join(journalDir, "journal"),
	}
	for _, f := range files {
		// Starts like a journal record: config refuses a journalPath
		// that holds something else.
		if err := os.WriteFile(f, []byte("fp1 x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := filepath.Join(root, "config.yaml")
	cfg := `system:
  certificateFilePath: "` + files[0] + `"
services:
  aws.greengrass.fleet_provisioning:
    configuration:
      outputDir: "` + out + `"
      csrPath: "` + files[4] + `"
      journalPath: "` + files[5] + `"
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	syncs := atomicfiletest.Record(t)
	var stdout, stderr bytes.Buffer
	if code := (Build{}).Main([]string{"fleetprov", "reset", "--config", cfgPath}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("reset exit %d, stderr %q", code, stderr.String())
	}
	for _, f := range files {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s still there after reset (%v); stdout:\n%s", f, err, stdout.String())
		}
	}
	for _, d := range []string{out, csrDir} {
		if n := syncs.Count(d); n != 1 {
			t.Errorf("%s fsynced %d times, want once after the files in it were moved aside", d, n)
		}
	}
	// The journal's directory also holds reset's plan: synced when the
	// plan is written, when the journal is moved, and when the plan goes.
	if n := syncs.Count(journalDir); n != 3 {
		t.Errorf("%s fsynced %d times, want 3 (plan written, journal moved, plan removed)", journalDir, n)
	}
	if !strings.Contains(stdout.String(), "provisioned values cleared") {
		t.Errorf("stdout = %q, want the config cleared", stdout.String())
	}
}
