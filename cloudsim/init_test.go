package cloudsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestInitWritesFiles(t *testing.T) {
	dir := t.TempDir()
	if err := Init(InitOptions{Dir: dir, Listen: "127.0.0.1:18883"}); err != nil {
		t.Fatal(err)
	}
	modes := map[string]os.FileMode{
		"ca.pem": 0o644, "ca.key": 0o600, "AmazonRootCA1.pem": 0o644,
		"server.pem.crt": 0o644, "server.pem.key": 0o600,
		"claim.pem.crt": 0o644, "claim.pem.key": 0o600,
		"registry.cbor": 0o600, "registry.log": 0o600, "cloud.json": 0o644, "config.yaml": 0o644,
		"templates/GreengrassFleetProvisioningTemplate.json":                                 0o644,
		"policies/GreengrassProvisioningClaimPolicy.json":                                    0o644,
		"policies/GreengrassV2IoTThingPolicy-GreengrassFleetProvisioning.json":               0o644,
		"policies/GreengrassV2TokenExchangeRoleAliasPolicy-GreengrassFleetProvisioning.json": 0o644,
	}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s has mode %o, want %o", name, got, want)
		}
	}

	// The template is the Greengrass one, byte for byte.
	got, _ := os.ReadFile(filepath.Join(dir, "templates/GreengrassFleetProvisioningTemplate.json"))
	want, _ := os.ReadFile("testdata/greengrass-lite-cfn-template-body.json")
	if !bytes.Equal(got, want) {
		t.Errorf("template differs from greengrass-lite-cfn-template-body.json")
	}

	// Policies are plain documents: no placeholders or CloudFormation left.
	for _, name := range []string{"GreengrassProvisioningClaimPolicy", "GreengrassV2IoTThingPolicy-GreengrassFleetProvisioning", "GreengrassV2TokenExchangeRoleAliasPolicy-GreengrassFleetProvisioning"} {
		b, _ := os.ReadFile(filepath.Join(dir, "policies", name+".json"))
		var doc struct {
			Version   string
			Statement []map[string]any
		}
		if err := json.Unmarshal(b, &doc); err != nil || doc.Version != "2012-10-17" || len(doc.Statement) == 0 {
			t.Errorf("policy %s is not an IoT policy document: %v: %s", name, err, b)
		}
		for _, bad := range []string{"<region>", "<account-id>", "Fn::", `"Ref"`, "GGFleetProvisioningTemplate"} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("policy %s still contains %s", name, bad)
			}
		}
	}
	claim, _ := os.ReadFile(filepath.Join(dir, "policies/GreengrassProvisioningClaimPolicy.json"))
	if !bytes.Contains(claim, []byte("arn:aws:iot:us-east-1:123456789012:topic/$aws/provisioning-templates/GreengrassFleetProvisioningTemplate/provision/*")) {
		t.Errorf("claim policy does not name the template: %s", claim)
	}
	thingPolicy, _ := os.ReadFile(filepath.Join(dir, "policies/GreengrassV2IoTThingPolicy-GreengrassFleetProvisioning.json"))
	if !bytes.Contains(thingPolicy, []byte("arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}*")) {
		t.Errorf("thing policy Connect resource not resolved: %s", thingPolicy)
	}

	reg, err := ReadRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Certificates) != 1 {
		t.Fatalf("registry holds %d certificates, want the claim only", len(reg.Certificates))
	}
	for _, c := range reg.Certificates {
		if !c.Claim || c.Status != StatusActive {
			t.Errorf("claim certificate recorded as %+v", c)
		}
	}
}

func TestInitDeviceConfig(t *testing.T) {
	dir := t.TempDir()
	if err := Init(InitOptions{Dir: dir, Listen: "127.0.0.1:18884"}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// It must look like the Greengrass sample: its comment markers survive.
	for _, marker := range []string{"#[Must leave blank]", "#[Modify if needed]", "#[Modify here]", "# Optional: Custom paths"} {
		if !bytes.Contains(raw, []byte(marker)) {
			t.Errorf("config.yaml lacks the sample's %q comments", marker)
		}
	}
	// Every key of the Greengrass sample is there, so a tool that reads
	// the sample reads this file.
	var sample, ours map[string]any
	sampleRaw, _ := os.ReadFile("testdata/greengrass-lite-fleet-provisioning-config.yaml")
	if err := yaml.Unmarshal(sampleRaw, &sample); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &ours); err != nil {
		t.Fatalf("config.yaml is not YAML: %v", err)
	}
	for _, path := range keyPaths("", sample) {
		if !hasKeyPath(ours, path) {
			t.Errorf("config.yaml lacks %s, which the Greengrass sample has", path)
		}
	}

	var cfg struct {
		System   map[string]string `yaml:"system"`
		Services struct {
			Nucleus struct {
				ComponentType string `yaml:"componentType"`
				Configuration struct {
					AWSRegion       string            `yaml:"awsRegion"`
					IoTCredEndpoint *string           `yaml:"iotCredEndpoint"`
					IoTDataEndpoint *string           `yaml:"iotDataEndpoint"`
					IoTRoleAlias    string            `yaml:"iotRoleAlias"`
					RunWithDefault  map[string]string `yaml:"runWithDefault"`
					DataPlanePort   string            `yaml:"greengrassDataPlanePort"`
				} `yaml:"configuration"`
			} `yaml:"aws.greengrass.NucleusLite"`
			FP struct {
				Configuration map[string]any `yaml:"configuration"`
			} `yaml:"aws.greengrass.fleet_provisioning"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("config.yaml is not YAML: %v", err)
	}
	wantSystem := map[string]string{"rootPath": dir + "/device", "privateKeyPath": "", "certificateFilePath": "", "rootCaPath": "", "thingName": ""}
	for k, v := range wantSystem {
		got, ok := cfg.System[k]
		if !ok || got != v {
			t.Errorf("system.%s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	n := cfg.Services.Nucleus
	if n.ComponentType != "NUCLEUS" || n.Configuration.AWSRegion != "us-east-1" || n.Configuration.IoTRoleAlias != "GreengrassV2TokenExchangeRoleAlias-GreengrassFleetProvisioning" ||
		n.Configuration.DataPlanePort != "8443" || n.Configuration.IoTCredEndpoint == nil || *n.Configuration.IoTCredEndpoint != "" ||
		n.Configuration.IoTDataEndpoint == nil || *n.Configuration.IoTDataEndpoint != "" {
		t.Errorf("NucleusLite section: %+v", n)
	}
	u, _ := user.Current()
	if pu := n.Configuration.RunWithDefault["posixUser"]; !strings.HasPrefix(pu, u.Username+":") {
		t.Errorf("posixUser %q is not the current user", pu)
	}
	fp := cfg.Services.FP.Configuration
	want := map[string]any{
		"iotDataEndpoint": "127.0.0.1",
		"mqttPort":        18884,
		"iotCredEndpoint": "localhost",
		"rootCaPath":      dir + "/AmazonRootCA1.pem",
		"claimKeyPath":    dir + "/claim.pem.key",
		"claimCertPath":   dir + "/claim.pem.crt",
		"csrCommonName":   "aws-greengrass-nucleus-lite",
		"templateName":    "GreengrassFleetProvisioningTemplate",
		"outputDir":       dir + "/device/credentials",
		"journalPath":     dir + "/device/journal",
		"restartStrategy": "none",
	}
	for k, v := range want {
		if fp[k] != v {
			t.Errorf("fleet_provisioning.%s = %#v, want %#v", k, fp[k], v)
		}
	}
	params, ok := fp["templateParams"].(map[string]any)
	if !ok || params["SerialNumber"] != "a2_b9_d2_5a_fd_f9" {
		t.Errorf("templateParams %#v, want a map with SerialNumber", fp["templateParams"])
	}
}

func TestInitRefusesInitialisedDir(t *testing.T) {
	dir := t.TempDir()
	if err := Init(InitOptions{Dir: dir, Listen: "127.0.0.1:18885"}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
	err := Init(InitOptions{Dir: dir, Listen: "127.0.0.1:18885"})
	if !errors.Is(err, ErrInitialised) {
		t.Fatalf("second Init: %v, want ErrInitialised", err)
	}
	want := filepath.Join(dir, "cloud.json") + " already exists: " + dir + " is already an emulator directory; choose another --dir or remove it"
	if err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
	if !bytes.Equal(before, after) {
		t.Errorf("second Init replaced the CA key")
	}
}

func TestInitBadListen(t *testing.T) {
	for _, listen := range []string{"8883", "127.0.0.1:0", "127.0.0.1:http"} {
		err := Init(InitOptions{Dir: t.TempDir(), Listen: listen})
		if !errors.Is(err, ErrListen) {
			t.Errorf("listen %q: %v, want ErrListen", listen, err)
		}
	}
}

func TestOpenUninitialised(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(Options{Dir: dir})
	if !errors.Is(err, ErrNotInitialised) || !strings.Contains(err.Error(), "fleetprov cloud init --dir") {
		t.Errorf("Open of an empty dir: %v", err)
	}
}

func TestOpenRejectsBrokenTemplate(t *testing.T) {
	dir := initDir(t)
	path := filepath.Join(dir, "templates", "Broken.json")
	if err := os.WriteFile(path, []byte(`{"Resources": {`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Options{Dir: dir})
	if err == nil || !strings.HasPrefix(err.Error(), path+": template Broken: not valid template JSON") {
		t.Errorf("Open with a broken template: %v", err)
	}
}

func keyPaths(prefix string, m map[string]any) []string {
	var out []string
	for k, v := range m {
		p := prefix + "/" + k
		if sub, ok := v.(map[string]any); ok {
			out = append(out, keyPaths(p, sub)...)
		} else {
			out = append(out, p)
		}
	}
	return out
}

func hasKeyPath(m map[string]any, path string) bool {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	var cur any = m
	for _, p := range parts {
		mm, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = mm[p]; !ok {
			return false
		}
	}
	return true
}

// update-certificate takes only a certificate id of exactly 64 lowercase
// hex characters.
func TestUpdateCertificateIDLength(t *testing.T) {
	dir := initDir(t)
	for _, id := range []string{strings.Repeat("a", 63), strings.Repeat("a", 65)} {
		_, err := UpdateCertificate(dir, id, StatusInactive)
		want := `certificate update refused: certificate id "` + id + `" is not 64 lowercase hex characters (see ` + "`fleetprov cloud certs --dir " + dir + " --json`)"
		if err == nil || err.Error() != want {
			t.Errorf("id of %d: %v\nwant %s", len(id), err, want)
		}
	}
}
