package main

import (
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

// A run killed after its template parameters were journaled resumes with
// exactly those values, although the source now answers differently: the
// thing is named from the first answer, and no thing from the second
// exists.
func TestResumeSendsJournaledParams(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := cloudtest.Start(t, cloudsim.Options{}, nil)

	serial := filepath.Join(dir, "serial")
	writeSerial := func(v string) {
		t.Helper()
		if err := os.WriteFile(serial, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeSerial("11_22_33_44_55_66")
	cfg := filepath.Join(dir, "config.yaml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const literal = `SerialNumber: "a2_b9_d2_5a_fd_f9"`
	if !strings.Contains(string(b), literal) {
		t.Fatalf("config.yaml has no %s", literal)
	}
	edited := strings.Replace(string(b), literal, "SerialNumber: {source: file, path: "+serial+"}", 1)
	if err := os.WriteFile(cfg, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	journal := filepath.Join(dir, "device", "journal")
	env := append(os.Environ(), envBeCLI+"=1", "FLEETPROV_RETRY_DEADLINE=30s")

	first := exec.Command(self, "run", "--config", cfg)
	first.Env = append(env, testHold("CreateCertificate=60s")...)
	var out1 cloudtest.Output
	first.Stdout, first.Stderr = &out1, &out1
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	cloudtest.WaitForState(t, journal, engine.CreateCertificate, &out1)
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	recs, _, err := engine.ReadJournal(journal)
	if err != nil {
		t.Fatal(err)
	}
	if got := recs[len(recs)-1].Data.TemplateParams["SerialNumber"]; got != "11_22_33_44_55_66" {
		t.Fatalf("journaled SerialNumber %q before the kill, want the file's first value", got)
	}

	// The source now answers differently.
	writeSerial("99_88_77_66_55_44")
	second := exec.Command(self, "run", "--config", cfg)
	second.Env = env
	out2, err := second.CombinedOutput()
	if err != nil {
		t.Fatalf("second run failed: %v\n%s", err, out2)
	}
	for _, want := range []string{"resuming at CreateCertificate", "thing:       gg_11_22_33_44_55_66"} {
		if !strings.Contains(string(out2), want) {
			t.Errorf("second run's output lacks %q:\n%s", want, out2)
		}
	}
	if strings.Contains(string(out2), "ok    DeriveParams") || strings.Contains(string(out2), "99_88") {
		t.Errorf("the resumed run derived the parameters again:\n%s", out2)
	}
	reg, err := cloudsim.ReadRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	var things []string
	for _, th := range reg.SortedThings() {
		things = append(things, th.Name)
	}
	if strings.Join(things, ",") != "gg_11_22_33_44_55_66" {
		t.Errorf("the cloud holds things %v, want only gg_11_22_33_44_55_66", things)
	}

	status := exec.Command(self, "status", "--config", cfg)
	status.Env = env
	out3, err := status.CombinedOutput()
	if err != nil || !strings.Contains(string(out3), "parameter:   SerialNumber=11_22_33_44_55_66 (file path="+serial+")") {
		t.Errorf("status (%v) does not show the journaled parameter:\n%s", err, out3)
	}
}
