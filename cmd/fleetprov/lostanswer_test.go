package main

import (
	"errors"
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

// A device loses power inside the RegisterThing round trip and stays off
// longer than its ownership token lives. Whether the cloud had registered
// it or not, the thing must never end with two ACTIVE certificates: when
// the old certificate is ACTIVE the next run stops and says what to do;
// when it is not, the run gets a new one and finishes.
func TestLostRegistrationAnswerNeverTwoActive(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		// delay performs the registration and holds its answer; drop
		// loses the request, so nothing is registered.
		fault      string
		registered bool
	}{
		{name: "registered, answer lost", fault: "RegisterThing:delay=60s:times=1", registered: true},
		{name: "request lost", fault: "RegisterThing:drop:times=1", registered: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, err := cloudsim.ParseFault(tc.fault)
			if err != nil {
				t.Fatal(err)
			}
			// A token that lives 8 s and is not reused after 5 s, so an
			// outage of a few seconds stands for AWS's hour.
			dir, srv := cloudtest.Start(t, cloudsim.Options{Faults: []cloudsim.Fault{f}, TokenLifetime: 8 * time.Second}, func(dir string) {
				cfg := filepath.Join(dir, "config.yaml")
				b, err := os.ReadFile(cfg)
				if err != nil {
					t.Fatal(err)
				}
				const anchor = `      templateName: "GreengrassFleetProvisioningTemplate"`
				if !strings.Contains(string(b), anchor) {
					t.Fatalf("config.yaml has no %q", anchor)
				}
				writeTestFile(t, cfg, strings.Replace(string(b), anchor, anchor+"\n      tokenLifetime: 8s\n      tokenMargin: 3s", 1))
			})
			cfg := filepath.Join(dir, "config.yaml")
			journal := filepath.Join(dir, "device", "journal")
			env := append(os.Environ(), envBeCLI+"=1", "FLEETPROV_RETRY_DEADLINE=30s")
			fleetprov := func(args ...string) (string, error) {
				cmd := exec.Command(self, args...)
				cmd.Env = env
				out, err := cmd.CombinedOutput()
				return string(out), err
			}

			first := exec.Command(self, "run", "--config", cfg)
			first.Env = env
			var out1 cloudtest.Output
			first.Stdout, first.Stderr = &out1, &out1
			if err := first.Start(); err != nil {
				t.Fatal(err)
			}
			cloudtest.WaitForState(t, journal, engine.RegisterThing, &out1)
			if tc.registered {
				waitForCloud(t, dir, "active", 1, &out1)
			} else {
				time.Sleep(300 * time.Millisecond) // let the request leave
			}
			if err := first.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = first.Wait()
			recs, _, err := engine.ReadJournal(journal)
			if err != nil || len(recs) == 0 {
				t.Fatalf("journal: %v", err)
			}
			prior := recs[len(recs)-1].Data.CertificateID
			// The outage: past tokenLifetime - tokenMargin.
			time.Sleep(time.Until(recs[len(recs)-1].Data.TokenIssuedAt.Add(5*time.Second + 500*time.Millisecond)))

			out2, err := fleetprov("run", "--config", cfg)
			counts, cerr := cloudCounts(dir)
			if cerr != nil {
				t.Fatal(cerr)
			}
			if !tc.registered {
				if err != nil {
					t.Fatalf("second run: %v\n%s", err, out2)
				}
				if counts["things"] != 1 || counts["active"] != 1 || counts["certs"] != 2 {
					t.Errorf("cloud holds %v; want 1 thing, 1 ACTIVE certificate and the old one pending", counts)
				}
				return
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("second run: %v, want exit status 1\n%s", err, out2)
			}
			want := "fleetprov: CreateCertificate: certificate " + prior + " is ACTIVE in the cloud: the thing was registered but the answer never arrived"
			if !strings.Contains(out2, want) {
				t.Errorf("second run's output lacks %q:\n%s", want, out2)
			}
			if counts["things"] != 1 || counts["active"] != 1 || counts["certs"] != 1 {
				t.Errorf("cloud holds %v; want the one registration and nothing asked since", counts)
			}
			status, err := fleetprov("status", "--config", cfg)
			if err != nil || !strings.Contains(status, "prior certificate: "+prior+" (its registration went unanswered") {
				t.Errorf("status (%v) does not name the prior certificate:\n%s", err, status)
			}

			// The operator deactivates it, as the message says.
			if err := srv.Close(); err != nil {
				t.Fatal(err)
			}
			if out, err := fleetprov("cloud", "update-certificate", "--dir", dir, "--certificate-id", prior, "--new-status", "INACTIVE"); err != nil || out != "certificate "+prior+": ACTIVE -> INACTIVE\n" {
				t.Fatalf("cloud update-certificate: %v\n%s", err, out)
			}
			srv2, err := cloudsim.Open(cloudsim.Options{Dir: dir, TokenLifetime: 8 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if err := srv2.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv2.Close() })
			out3, err := fleetprov("run", "--config", cfg)
			if err != nil || !strings.Contains(out3, "provisioned in") {
				t.Fatalf("third run: %v\n%s", err, out3)
			}
			counts, err = cloudCounts(dir)
			if err != nil {
				t.Fatal(err)
			}
			if counts["things"] != 1 || counts["active"] != 1 || counts["certs"] != 2 {
				t.Errorf("cloud holds %v; want 1 thing, the new certificate ACTIVE and the old one INACTIVE", counts)
			}
		})
	}
}

// waitForCloud polls the emulator's registry until count (things, certs,
// active) reaches n.
func waitForCloud(t *testing.T, dir, count string, n int, out *cloudtest.Output) {
	t.Helper()
	deadline := time.Now().Add(cloudtest.WaitLimit)
	for time.Now().Before(deadline) {
		if c, err := cloudCounts(dir); err == nil && c[count] >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the cloud never held %d %s; run output so far:\n%s", n, count, out.String())
}
