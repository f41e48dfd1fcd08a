package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
)

// TestResumeAfterSIGKILL kills `fleetprov run` once inside each state and
// runs it again: the second run must finish, and once a certificate had been
// received, the cloud must hold no second one.
func TestResumeAfterSIGKILL(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		state string
		// fault holds the cloud's answer (the request is really in flight
		// when the kill lands); hold pauses the engine inside a local step.
		fault string
		hold  string
		// maxCerts is how many device certificates the cloud may hold in
		// the end: a kill while CreateCertificate waits for its answer can
		// leave one pending certificate behind, as on AWS.
		maxCerts int
	}{
		{state: engine.DeriveParams, hold: "DeriveParams=20s", maxCerts: 1},
		{state: engine.PrepareKey, hold: "PrepareKey=20s", maxCerts: 1},
		{state: engine.CreateCertificate, fault: "CreateCertificateFromCsr:delay=20s:times=1", maxCerts: 2},
		{state: engine.RegisterThing, fault: "RegisterThing:delay=20s:times=1", maxCerts: 1},
		{state: engine.Persist, hold: "Persist=20s", maxCerts: 1},
		{state: engine.Restart, hold: "Restart=20s", maxCerts: 1},
	}
	for _, tc := range cases {
		t.Run("killed in "+tc.state, func(t *testing.T) {
			t.Parallel()
			var faults []cloudsim.Fault
			if tc.fault != "" {
				f, err := cloudsim.ParseFault(tc.fault)
				if err != nil {
					t.Fatal(err)
				}
				faults = append(faults, f)
			}
			dir, _ := cloudtest.Start(t, cloudsim.Options{Faults: faults}, nil)

			cfg := filepath.Join(dir, "config.yaml")
			journal := filepath.Join(dir, "device", "journal")
			restarts := filepath.Join(dir, "restarts")
			env := append(os.Environ(), envBeCLI+"=1",
				"FLEETPROV_RESTART_STRATEGY=command",
				"FLEETPROV_RESTART_COMMAND=echo restarted >> "+restarts,
				"FLEETPROV_RETRY_DEADLINE=30s",
			)

			// First run: killed with SIGKILL once it is inside the state.
			first := exec.Command(self, "run", "--config", cfg)
			first.Env = append(env, testHold(tc.hold)...)
			var out1 cloudtest.Output
			first.Stdout, first.Stderr = &out1, &out1
			if err := first.Start(); err != nil {
				t.Fatal(err)
			}
			cloudtest.WaitForState(t, journal, tc.state, &out1)
			// Give an in-flight request time to reach the cloud, so the
			// kill lands while the cloud holds its answer.
			time.Sleep(300 * time.Millisecond)
			if err := first.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = first.Wait()
			if _, err := os.Stat(filepath.Join(dir, "device", "credentials", "certificate.pem")); tc.state != engine.Restart && err == nil {
				t.Fatalf("certificate.pem exists before Persist ran")
			}

			// Second run: must resume and finish.
			second := exec.Command(self, "run", "--config", cfg)
			second.Env = env
			out2, err := second.CombinedOutput()
			if err != nil {
				t.Fatalf("second run failed: %v\n%s", err, out2)
			}
			if !strings.Contains(string(out2), "resuming at ") {
				t.Errorf("second run did not resume:\n%s", out2)
			}
			if !strings.Contains(string(out2), "provisioned in") {
				t.Errorf("second run did not finish:\n%s", out2)
			}

			creds := filepath.Join(dir, "device", "credentials")
			if err := certOK(filepath.Join(creds, "certificate.pem"), filepath.Join(dir, "AmazonRootCA1.pem"), filepath.Join(creds, "priv_key")); err != nil {
				t.Error(err)
			}
			counts, err := cloudCounts(dir)
			if err != nil {
				t.Fatal(err)
			}
			if counts["things"] != 1 || counts["active"] != 1 || counts["certs"] > tc.maxCerts {
				t.Errorf("cloud holds %v; want 1 thing, 1 ACTIVE certificate, at most %d certificates", counts, tc.maxCerts)
			}
			if raw, _ := os.ReadFile(restarts); !strings.Contains(string(raw), "restarted") {
				t.Errorf("services were not restarted")
			}
			recs, _, _ := engine.ReadJournal(journal)
			if last := recs[len(recs)-1]; last.State != engine.Done {
				t.Errorf("journal ends in %s, want Done", last.State)
			}
		})
	}
}

func testHold(h string) []string {
	if h == "" {
		return nil
	}
	return []string{"FLEETPROV_TEST_HOLD=" + h}
}
