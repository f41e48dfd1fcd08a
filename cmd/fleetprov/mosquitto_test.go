package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/mosquittotest"
)

// TestProvisionThroughMosquitto proves the device's MQTT client against a
// broker we did not write: Debian's mosquitto, with the emulator's
// provisioning service attached to it as a client. A plain broker cannot
// route an answer to the one connection that asked, so this mode serves one
// device at a time; each case has its own broker.
func TestProvisionThroughMosquitto(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ format, mode string }{
		{"json", "csr"}, {"cbor", "csr"}, {"json", "create-keys"}, {"cbor", "create-keys"},
	} {
		t.Run(tc.format+"/"+tc.mode, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := cloudsim.Init(cloudsim.InitOptions{Dir: dir, Listen: "127.0.0.1:1"}); err != nil {
				t.Fatal(err)
			}
			b := mosquittotest.Start(t, mosquittotest.Config{
				CAFile:   filepath.Join(dir, "ca.pem"),
				CertFile: filepath.Join(dir, "server.pem.crt"),
				KeyFile:  filepath.Join(dir, "server.pem.key"),
			})
			srv, err := cloudsim.Open(cloudsim.Options{Dir: dir, Broker: b.URL()})
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })

			_, port, _ := strings.Cut(b.Addr(), ":")
			run := exec.Command(self, "run", "--config", filepath.Join(dir, "config.yaml"), "--log-level", "debug")
			run.Env = append(os.Environ(), envBeCLI+"=1",
				"FLEETPROV_MQTT_PORT="+port,
				"FLEETPROV_PAYLOAD_FORMAT="+tc.format,
				"FLEETPROV_CERTIFICATE_MODE="+tc.mode,
			)
			out, err := run.CombinedOutput()
			if err != nil {
				t.Fatalf("run through mosquitto failed: %v\n%s\nmosquitto log:\n%s", err, out, b.Log())
			}
			// The requests really went through mosquitto, on the format's
			// topics.
			topic := map[string]string{"csr": "$aws/certificates/create-from-csr/", "create-keys": "$aws/certificates/create/"}[tc.mode] + tc.format
			if !strings.Contains(string(out), topic) {
				t.Errorf("no request on %s in the run's log", topic)
			}
			// No policy in broker mode: Verify's connection with the new
			// certificate, client id = the thing name, is simply taken.
			recs, _, err := engine.ReadJournal(filepath.Join(dir, "device", "journal"))
			if err != nil || len(recs) == 0 || recs[len(recs)-1].Data.VerifiedAt.IsZero() {
				t.Errorf("the journal does not say the new certificate was verified (%d records, %v)\n%s", len(recs), err, out)
			}
			if log := b.Log(); !strings.Contains(log, " as gg_a2_b9_d2_5a_fd_f9 ") {
				t.Errorf("mosquitto saw no connection with client id gg_a2_b9_d2_5a_fd_f9:\n%s", log)
			}
			creds := filepath.Join(dir, "device", "credentials")
			if err := certOK(filepath.Join(creds, "certificate.pem"), filepath.Join(dir, "AmazonRootCA1.pem"), filepath.Join(creds, "priv_key")); err != nil {
				t.Error(err)
			}
			counts, err := cloudCounts(dir)
			if err != nil {
				t.Fatal(err)
			}
			if counts["things"] != 1 || counts["certs"] != 1 || counts["active"] != 1 {
				t.Errorf("cloud holds %v; want one thing and one ACTIVE certificate", counts)
			}
		})
	}
}
