package cloudsim

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"
)

// A cloud that listens on an IPv6 address: its server certificate names
// the address, and the device config writes it in brackets, since
// "::1" followed by a port would be ambiguous.
func TestInitIPv6Listen(t *testing.T) {
	dir := t.TempDir()
	if err := Init(InitOptions{Dir: dir, Listen: "[::1]:18885"}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, fileServerCert))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(raw)
	if b == nil {
		t.Fatal("server certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("::1"); err != nil {
		t.Errorf("server certificate does not name ::1: %v (IP addresses %v)", err, cert.IPAddresses)
	}
	if !cert.IPAddresses[len(cert.IPAddresses)-1].Equal(net.ParseIP("::1")) {
		t.Errorf("IP addresses %v", cert.IPAddresses)
	}

	conf, err := os.ReadFile(filepath.Join(dir, fileDeviceConfig))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Services struct {
			FP struct {
				Configuration map[string]any `yaml:"configuration"`
			} `yaml:"aws.greengrass.fleet_provisioning"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(conf, &cfg); err != nil {
		t.Fatal(err)
	}
	c := cfg.Services.FP.Configuration
	if c["iotDataEndpoint"] != "[::1]" || c["mqttPort"] != 18885 {
		t.Errorf("device config: iotDataEndpoint %#v, mqttPort %#v; want \"[::1]\", 18885", c["iotDataEndpoint"], c["mqttPort"])
	}
}
