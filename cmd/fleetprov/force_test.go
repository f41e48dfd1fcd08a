package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
)

// run --force killed in PrepareKey, before the old key is set aside, still
// rotates the key when the next run resumes: the old key is kept as a
// backup and the new certificate is for a new key.
func TestForcedRotationSurvivesKillInPrepareKey(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := cloudtest.Start(t, cloudsim.Options{}, nil)
	cfg := filepath.Join(dir, "config.yaml")
	creds := filepath.Join(dir, "device", "credentials")
	key := filepath.Join(creds, "priv_key")
	env := append(os.Environ(), envBeCLI+"=1")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(self, append([]string{"run", "--config", cfg}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("run %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run()
	oldKey, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}

	forced := exec.Command(self, "run", "--config", cfg, "--force")
	forced.Env = append(env, testHold("PrepareKey=60s")...)
	var out cloudtest.Output
	forced.Stdout, forced.Stderr = &out, &out
	if err := forced.Start(); err != nil {
		t.Fatal(err)
	}
	cloudtest.WaitForState(t, filepath.Join(dir, "device", "journal"), engine.PrepareKey, &out)
	if err := forced.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = forced.Wait()

	second := run()
	if strings.Contains(second, "reusing existing device key") || !strings.Contains(second, "kept old device key as backup") {
		t.Errorf("the resumed forced run did not rotate the key:\n%s", second)
	}
	newKey, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(newKey, oldKey) {
		t.Fatal("the device key is the one from before --force")
	}
	baks, _ := filepath.Glob(key + ".bak-*")
	if len(baks) != 1 {
		t.Fatalf("backups of the key: %v, want one", baks)
	}
	if b, _ := os.ReadFile(baks[0]); !bytes.Equal(b, oldKey) {
		t.Errorf("%s is not the old key", baks[0])
	}
	if err := certOK(filepath.Join(creds, "certificate.pem"), filepath.Join(dir, "AmazonRootCA1.pem"), key); err != nil {
		t.Error(err)
	}
}
