package main

import (
	"context"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
)

// A release build of fleetprov has no test seam: the variables that pause
// or kill the test binary's runs change nothing, and the code that would
// read them is not in the binary.
func TestReleaseBinaryIgnoresTestSeams(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not on PATH: cannot build the release binary")
	}
	bin := filepath.Join(t.TempDir(), "fleetprov")
	build := exec.Command(gobin, "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	syms, err := f.Symbols()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syms {
		if strings.Contains(s.Name, "faultpoint.Set") || strings.Contains(s.Name, "outputseam.Set") || strings.HasPrefix(s.Name, "main.installTestSeams") {
			t.Errorf("the release binary holds %s: a test seam can be installed in it", s.Name)
		}
	}

	seams := []string{
		envTestHold + "=DeriveParams=1h,PrepareKey=1h,CreateCertificate=1h,RegisterThing=1h,Persist=1h,Restart=1h",
		envCrashAt + "=1",
	}
	// The same variables do act on the test binary run as fleetprov: it
	// kills itself at the first durable write.
	dir, _ := cloudtest.Start(t, cloudsim.Options{}, nil)
	cfg := filepath.Join(dir, "config.yaml")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	seamed := exec.Command(self, "run", "--config", cfg)
	seamed.Env = append(os.Environ(), append(seams, envBeCLI+"=1")...)
	out, err := seamed.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the test binary with %v: %v, want killed by SIGKILL\n%s", seams, err, out)
	}

	// The release binary provisions as if they were not set.
	ctx, cancel := context.WithTimeout(context.Background(), cloudtest.WaitLimit)
	defer cancel()
	release := exec.CommandContext(ctx, bin, "run", "--config", cfg)
	release.Env = append(os.Environ(), seams...)
	out, err = release.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "provisioned in") {
		t.Fatalf("the release binary with %v: %v (within %v), want provisioned\n%s", seams, err, cloudtest.WaitLimit, out)
	}
}
