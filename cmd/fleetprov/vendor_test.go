package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
)

// buildVendorExample builds examples/vendor-build, a module of its own that
// imports fleetprov through a replace, as a vendor's would.
func buildVendorExample(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not on PATH: cannot build the vendor example")
	}
	bin := filepath.Join(t.TempDir(), "acme-provision")
	cmd := exec.Command(gobin, "build", "-o", bin, ".")
	cmd.Dir = filepath.Join("..", "..", "examples", "vendor-build")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build examples/vendor-build: %v\n%s", err, out)
	}
	return bin
}

// The vendor example adds a step after RegisterThing, sets its own
// template by default, and leaves the local cloud out. Killed inside its
// own step, it resumes there and finishes; the backend hears of the device
// once.
func TestVendorBuild(t *testing.T) {
	bin := buildVendorExample(t)
	if out, _ := exec.Command("go", "version", "-m", bin).CombinedOutput(); strings.Contains(string(out), "mochi-mqtt") {
		t.Errorf("the device-only vendor build links the local cloud's broker:\n%s", out)
	}
	out, err := exec.Command(bin, "cloud", "serve").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unknown command "cloud"`) {
		t.Errorf("vendor build has a cloud command: %v\n%s", err, out)
	}

	// The local cloud, serving the vendor's template to a claim whose
	// policy allows that template only.
	dir, _ := cloudtest.Start(t, cloudsim.Options{ClaimPolicies: []string{"AcmeClaimPolicy"}}, func(dir string) {
		tmpl, err := os.ReadFile(filepath.Join(dir, "templates", cloudsim.DefaultTemplateName+".json"))
		if err != nil {
			t.Fatal(err)
		}
		writeTestFile(t, filepath.Join(dir, "templates", "AcmeFleetTemplate.json"), string(tmpl))
		writeTestFile(t, filepath.Join(dir, "policies", "AcmeClaimPolicy.json"), acmeClaimPolicy)
		// The device's config names no template: the build's default does.
		cfg := filepath.Join(dir, "config.yaml")
		b, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		writeTestFile(t, cfg, strings.Replace(string(b), `templateName: "GreengrassFleetProvisioningTemplate"`, `templateName: ""`, 1))
	})
	cfg := filepath.Join(dir, "config.yaml")

	var mu sync.Mutex
	var registrations []map[string]string
	// The first request hangs until its client goes away, unanswered and
	// not recorded: the run that sent it is killed inside the vendor's
	// step. (A release build has no test hold to pause it there.)
	stuck := make(chan struct{})
	var once sync.Once
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var dev map[string]string
		if err := json.NewDecoder(r.Body).Decode(&dev); err != nil || r.Method != http.MethodPost {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		first := false
		once.Do(func() { first = true })
		if first {
			close(stuck)
			select {
			case <-r.Context().Done():
			case <-time.After(cloudtest.WaitLimit):
			}
			http.Error(w, "gave up", http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		registrations = append(registrations, dev)
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"deviceId": "acme-000001"}`))
	}))
	t.Cleanup(backend.Close)

	journal := filepath.Join(dir, "device", "journal")
	env := append(os.Environ(), "ACME_BACKEND_URL="+backend.URL+"/devices", "FLEETPROV_RETRY_DEADLINE=30s")
	first := exec.Command(bin, "run", "--config", cfg)
	first.Env = env
	var out1 cloudtest.Output
	first.Stdout, first.Stderr = &out1, &out1
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stuck:
	case <-time.After(cloudtest.WaitLimit):
		t.Fatalf("the first run never asked the backend; output so far:\n%s", out1.String())
	}
	cloudtest.WaitForState(t, journal, "RegisterWithBackend", &out1)
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()

	// A state script on the vendor's own step sees the step's own data.
	scripts := t.TempDir()
	leave := filepath.Join(t.TempDir(), "leave.json")
	if err := os.WriteFile(filepath.Join(scripts, "RegisterWithBackend_Leave_10_record"), []byte("#!/bin/sh\ncat > "+leave+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	second := exec.Command(bin, "run", "--config", cfg)
	second.Env = append(env, "FLEETPROV_STATE_SCRIPTS_DIR="+scripts)
	out2, err := second.CombinedOutput()
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, out2)
	}
	for _, want := range []string{"resuming at RegisterWithBackend", "ok    RegisterWithBackend", "provisioned in"} {
		if !strings.Contains(string(out2), want) {
			t.Errorf("second run lacks %q:\n%s", want, out2)
		}
	}
	var ev struct {
		Kind, State string
		Data        struct {
			Ext map[string]struct{ DeviceID string }
		}
	}
	if raw, err := os.ReadFile(leave); err != nil || json.Unmarshal(raw, &ev) != nil ||
		ev.Kind != "leave" || ev.State != "RegisterWithBackend" || ev.Data.Ext["RegisterWithBackend"].DeviceID != "acme-000001" {
		t.Errorf("the vendor step's Leave script got %+v (%v), want its device id under data.ext", ev, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(registrations) != 1 || registrations[0]["thingName"] != "gg_a2_b9_d2_5a_fd_f9" || len(registrations[0]["certificateId"]) != 64 {
		t.Errorf("backend registrations: %v, want the thing once", registrations)
	}
	recs, _, err := engine.ReadJournal(journal)
	if err != nil {
		t.Fatal(err)
	}
	last := recs[len(recs)-1]
	var rec struct{ DeviceID string }
	if found, err := last.Data.Get("RegisterWithBackend", &rec); !found || err != nil || rec.DeviceID != "acme-000001" || last.State != engine.Done {
		t.Errorf("last record %s: vendor data %+v (found %v, %v)", last.State, rec, found, err)
	}
	counts, err := cloudCounts(dir)
	if err != nil {
		t.Fatal(err)
	}
	if counts["things"] != 1 || counts["certs"] != 1 || counts["active"] != 1 {
		t.Errorf("cloud holds %v", counts)
	}
}

// acmeClaimPolicy is the vendor's claim policy: its template only.
const acmeClaimPolicy = `{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
  {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": [
    "arn:aws:iot:us-east-1:123456789012:topic/$aws/certificates/create-from-csr/*",
    "arn:aws:iot:us-east-1:123456789012:topic/$aws/provisioning-templates/AcmeFleetTemplate/provision/*"]},
  {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [
    "arn:aws:iot:us-east-1:123456789012:topicfilter/$aws/certificates/create-from-csr/*",
    "arn:aws:iot:us-east-1:123456789012:topicfilter/$aws/provisioning-templates/AcmeFleetTemplate/provision/*"]}]}`

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
