package main

import (
	"errors"
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

// Ctrl-C or a service manager's SIGTERM interrupts a run: exit 130 or 143
// (the shell's 128 + signal), "run again to resume", and a journal still
// in the state it was in, from which the next run finishes.
func TestInterruptedRunExitsBySignal(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			dir, _ := cloudtest.Start(t, cloudsim.Options{}, nil)
			cfg := filepath.Join(dir, "config.yaml")
			journal := filepath.Join(dir, "device", "journal")
			env := append(os.Environ(), envBeCLI+"=1")

			first := exec.Command(self, "run", "--config", cfg)
			first.Env = append(env, testHold("Persist=60s")...)
			var out cloudtest.Output
			first.Stdout, first.Stderr = &out, &out
			if err := first.Start(); err != nil {
				t.Fatal(err)
			}
			cloudtest.WaitForState(t, journal, engine.Persist, &out)
			if err := first.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			err := first.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.code {
				t.Fatalf("exit %v, want %d\n%s", err, tc.code, out.String())
			}
			for _, want := range []string{"stop  Persist", "fleetprov: Persist: interrupted: run again to resume"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
			if strings.Contains(out.String(), "FAIL") {
				t.Errorf("an interruption printed as a failure:\n%s", out.String())
			}
			recs, _, err := engine.ReadJournal(journal)
			if err != nil || recs[len(recs)-1].State != engine.Persist {
				t.Fatalf("journal after the interruption ends in %v (%v), want Persist", recs[len(recs)-1].State, err)
			}

			second := exec.Command(self, "run", "--config", cfg)
			second.Env = env
			if b, err := second.CombinedOutput(); err != nil || !strings.Contains(string(b), "resuming at Persist") {
				t.Errorf("second run: %v\n%s", err, b)
			}
		})
	}
}
