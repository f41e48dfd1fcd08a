package config

import (
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/failure"
)

// sampleWithRealFiles copies a testdata config into dir with its claim
// and root CA paths pointing at real PEM files.
func sampleWithRealFiles(t *testing.T, name string) (string, pki) {
	t.Helper()
	dir := t.TempDir()
	p := newPKI(t, dir)
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	s = strings.Replace(s, `"/path/to/AmazonRootCA1.pem"`, q(p.ca), 1)
	s = strings.Replace(s, `"path/to/private.pem.key"`, q(p.key), 1)
	s = strings.Replace(s, `"path/to/certificate.pem.crt"`, q(p.cert), 1)
	return writeFile(t, filepath.Join(dir, "config.yaml"), s), p
}

func TestLoadSampleConfigs(t *testing.T) {
	for _, name := range []string{"greengrass-lite-config.yaml", "seed-config.yaml"} {
		t.Run(name, func(t *testing.T) {
			path, p := sampleWithRealFiles(t, name)
			c, err := Load(LoadOptions{Path: path})
			if err != nil {
				t.Fatal(err)
			}
			want := &Config{
				File:                path,
				RootPath:            "/var/lib/greengrass",
				AWSRegion:           "us-east-1",
				IoTRoleAlias:        "GreengrassV2TokenExchangeRoleAlias-GreengrassFleetProvisioning",
				PosixUser:           "ggcore:ggcore",
				IoTDataEndpoint:     "aaaaaaaaaaaaaa-ats.iot.us-east-1.amazonaws.com",
				IoTDataHost:         "aaaaaaaaaaaaaa-ats.iot.us-east-1.amazonaws.com",
				IoTCredEndpoint:     "cccccccccccccc.credentials.iot.us-east-1.amazonaws.com",
				RootCAPath:          p.ca,
				ClaimCertPath:       p.cert,
				ClaimKeyPath:        p.key,
				TemplateName:        "GreengrassFleetProvisioningTemplate",
				TemplateParams:      map[string]string{"SerialNumber": "a2_b9_d2_5a_fd_f9"},
				CSRCommonName:       "aws-greengrass-nucleus-lite",
				CSRPath:             "/var/lib/greengrass/credentials/cert_req.pem",
				CertPath:            "/var/lib/greengrass/credentials/certificate.pem",
				KeyPath:             "/var/lib/greengrass/credentials/priv_key",
				KeyURI:              "file:/var/lib/greengrass/credentials/priv_key",
				OutputDir:           "/var/lib/greengrass/credentials",
				RootCAOutPath:       "/var/lib/greengrass/credentials/AmazonRootCA.pem",
				KeyAlgorithm:        "ecdsa-p256",
				PayloadFormat:       "json",
				CertificateMode:     "csr",
				JournalPath:         "/var/lib/greengrass/fleetprov/journal",
				MQTTPort:            8883,
				RequestTimeout:      30 * time.Second,
				ConnectTimeout:      30 * time.Second,
				RetryDeadline:       5 * time.Minute,
				TokenLifetime:       time.Hour,
				TokenMargin:         5 * time.Minute,
				Verify:              true,
				RestartStrategy:     "systemd",
				RestartUnits:        []string{"greengrass-lite.target"},
				SystemctlPath:       "systemctl",
				PluginDir:           DefaultPluginDir,
				StateScriptTimeout:  30 * time.Second,
				CertificateFilePath: "",
			}
			got := *c
			got.origin = nil
			if !reflect.DeepEqual(&got, want) {
				t.Errorf("got  %+v\nwant %+v", got, *want)
			}
			if IsProvisioned(c) {
				t.Error("IsProvisioned = true for a blank certificateFilePath")
			}
		})
	}
}

// The samples as shipped name files that do not exist: SkipFileChecks loads them,
// and relative paths resolve against the config file's directory.
func TestLoadSamplePartialResolvesRelativePaths(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile("testdata/seed-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, filepath.Join(dir, "config.yaml"), string(b))
	c, err := Load(LoadOptions{Path: path, SkipFileChecks: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "path/to/private.pem.key"); c.ClaimKeyPath != want {
		t.Errorf("ClaimKeyPath = %q, want %q", c.ClaimKeyPath, want)
	}
	if c.RootCAPath != "/path/to/AmazonRootCA1.pem" {
		t.Errorf("RootCAPath = %q", c.RootCAPath)
	}
	// Without SkipFileChecks the missing claim key is reported.
	_, err = Load(LoadOptions{Path: path})
	want := "config " + path + ": services.aws.greengrass.fleet_provisioning.configuration.claimKeyPath " +
		filepath.Join(dir, "path/to/private.pem.key") + " does not exist: set it to the claim private key's PEM file"
	if err == nil || err.Error() != want || !failure.IsUsage(err) {
		t.Errorf("err = %v\nwant %s", err, want)
	}
}

func TestLoadErrors(t *testing.T) {
	type tc struct {
		name    string
		set     map[string]string // raw YAML values; "" deletes the key
		raw     string            // whole file, instead of set
		noFile  bool
		env     []string
		args    []string
		rootOK  bool // false: skip when running as root (permission tests)
		prepare func(t *testing.T, p pki)
		want    string // {file} and {dir} are replaced
	}
	const fpk = "config {file}: services.aws.greengrass.fleet_provisioning.configuration."
	long := func(n int) string { return strings.Repeat("a", n) }
	cases := []tc{
		{name: "file missing", noFile: true, want: "config file {file} not found: pass --config FILE or create it"},
		{name: "not YAML", raw: "system:\n  rootPath: \"/x\"\n\tthingName: y\n", want: "config {file} is not valid YAML: line 3: found character that cannot start any token: fix the file"},
		{name: "duplicate key", raw: "system:\n  rootPath: a\n  rootPath: b\n", want: `config {file} is not valid YAML: line 3: mapping key "rootPath" already defined at line 2: fix the file`},
		{name: "top level list", raw: "- a\n- b\n", want: "config {file}: its top level (line 1) is a list, not a mapping: write the sections system and services at the top level, as in Greengrass's config.yaml"},
		{name: "services null", raw: "system: {}\nservices: ~\n", want: "config {file}: services (line 2) is empty (null), not a mapping, so claimCertPath is missing: write the section's keys indented under it"},
		{name: "system a number", raw: "system: 5\nservices: ~\n", want: "config {file}: system (line 1) is a number, not a mapping: write the section's keys indented under it"},
		{name: "services a list", raw: "services: [a, b]\n", want: "config {file}: services (line 1) is a list, not a mapping: write the section's keys indented under it"},
		{name: "nucleus a string", raw: "services:\n  aws.greengrass.NucleusLite: \"x\"\n", want: "config {file}: services.aws.greengrass.NucleusLite (line 2) is a string, not a mapping: write the section's keys indented under it"},
		{name: "runWithDefault a boolean", raw: "services:\n  aws.greengrass.NucleusLite:\n    configuration:\n      runWithDefault: true\n", want: "config {file}: services.aws.greengrass.NucleusLite.configuration.runWithDefault (line 4) is a boolean, not a mapping: write the section's keys indented under it"},
		{name: "configuration null", raw: "services:\n  aws.greengrass.fleet_provisioning:\n    configuration:\n", want: "config {file}: services.aws.greengrass.fleet_provisioning.configuration (line 3) is empty (null), not a mapping, so claimCertPath is missing: write the section's keys indented under it"},
		{name: "section merged in", raw: "base: &b {aws.greengrass.fleet_provisioning: [1]}\nservices:\n  <<: *b\n", want: "config {file}: services.aws.greengrass.fleet_provisioning (line 1) is a list, not a mapping: write the section's keys indented under it"},
		{name: "claimCertPath missing", set: map[string]string{"claimCertPath": ""}, want: fpk + "claimCertPath is missing: set it to the claim certificate's PEM file, or pass --claim-cert"},
		{name: "claimKeyPath empty", set: map[string]string{"claimKeyPath": `""`}, want: fpk + "claimKeyPath is empty: set it to the claim private key's PEM file, or pass --claim-key"},
		{name: "rootCaPath missing", set: map[string]string{"rootCaPath": ""}, want: fpk + "rootCaPath is missing: set it to the root CA certificate's PEM file (AmazonRootCA1.pem), or pass --root-ca-path"},
		{name: "templateName missing", set: map[string]string{"templateName": ""}, want: fpk + "templateName is missing: set it to the provisioning template's name, or pass --template-name"},
		{name: "iotDataEndpoint missing", set: map[string]string{"iotDataEndpoint": ""}, want: fpk + "iotDataEndpoint is missing: set it to the AWS IoT data endpoint (aws iot describe-endpoint --endpoint-type iot:Data-ATS), or pass --endpoint"},
		{name: "templateParams list", set: map[string]string{"templateParams": "[a, b]"}, want: fpk + `templateParams is a list: write it as a YAML map or a JSON object such as {"SerialNumber": "X"}`},
		{name: "templateParams bad JSON", set: map[string]string{"templateParams": `'{"SerialNumber": }'`}, want: fpk + `templateParams is not a JSON object (invalid character '}' looking for beginning of value): write it as a YAML map or a JSON object such as {"SerialNumber": "X"}`},
		{name: "templateParams JSON array", set: map[string]string{"templateParams": `'["a"]'`}, want: fpk + `templateParams is a JSON list, not an object: write it as a YAML map or a JSON object such as {"SerialNumber": "X"}`},
		{name: "templateParams trailing text", set: map[string]string{"templateParams": `'{"a": "b"} x'`}, want: fpk + `templateParams has text after the JSON object: write it as a YAML map or a JSON object such as {"SerialNumber": "X"}`},
		{name: "templateParams nested", set: map[string]string{"templateParams": "{Serial: {a: b}}"}, want: fpk + `templateParams.Serial: no source: add source: NAME (known: command, dmi, env, file, mac, machine-id, plugin:NAME), or write a plain value`},
		{name: "csrCommonName too long", set: map[string]string{"csrCommonName": long(65)}, want: fpk + "csrCommonName is 65 characters long; a certificate's common name may have at most 64: shorten it"},
		{name: "templateName too long", set: map[string]string{"templateName": long(37)}, want: fpk + "templateName is 37 characters long; a template name may have at most 36: shorten it"},
		{name: "templateName bad characters", set: map[string]string{"templateName": `"my template"`}, want: fpk + `templateName "my template" is not a valid template name: use only letters, digits, '_' and '-'`},
		{name: "endpoint too long", set: map[string]string{"iotDataEndpoint": long(129)}, want: fpk + "iotDataEndpoint is 129 characters long; an endpoint may have at most 128: check the value"},
		{name: "endpoint with scheme", set: map[string]string{"iotDataEndpoint": "mqtts://x.example"}, want: fpk + `iotDataEndpoint "mqtts://x.example" is not a host name: write only the host (or host:port), e.g. xxxx-ats.iot.us-east-1.amazonaws.com`},
		{name: "endpoint bad port", set: map[string]string{"iotDataEndpoint": "x.example:99999"}, want: fpk + `iotDataEndpoint "x.example:99999" is not host or host:port: write e.g. xxxx-ats.iot.us-east-1.amazonaws.com or [::1]:8883`},
		{name: "claim key tpm: without handle", set: map[string]string{"claimKeyPath": `"tpm:"`}, want: fpk + `claimKeyPath "tpm:" names no handle: the claim key must already be in the TPM: name its handle (handle:0x81000000 or tpm:handle=0x81000000)`},
		{name: "claim key missing", set: map[string]string{"claimKeyPath": `"nokey.pem"`}, want: fpk + "claimKeyPath {dir}/nokey.pem does not exist: set it to the claim private key's PEM file"},
		{name: "claim key permission denied", prepare: func(t *testing.T, p pki) { chmod(t, p.key, 0) },
			want: fpk + "claimKeyPath {dir}/claim.key cannot be read (permission denied): run as a user that can read it"},
		{name: "claim key not PEM", rootOK: true, prepare: func(t *testing.T, p pki) { writeFile(t, p.key, "SECRET-KEY-MATERIAL\n") },
			want: fpk + "claimKeyPath {dir}/claim.key is not a PEM private key: set it to the claim private key's unencrypted PEM file"},
		{name: "claim key is a certificate", rootOK: true, set: map[string]string{"claimKeyPath": `"claim.crt"`},
			want: fpk + "claimKeyPath {dir}/claim.crt is not a PEM private key: set it to the claim private key's unencrypted PEM file"},
		{name: "claim key corrupt", rootOK: true, prepare: func(t *testing.T, p pki) {
			writeFile(t, p.key, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("SECRET-KEY-MATERIAL")})))
		}, want: fpk + "claimKeyPath {dir}/claim.key holds a PRIVATE KEY block that does not parse: set it to the claim private key's unencrypted PEM file"},
		{name: "claim key encrypted", rootOK: true, prepare: func(t *testing.T, p pki) {
			writeFile(t, p.key, string(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("SECRET-KEY-MATERIAL")})))
		}, want: fpk + "claimKeyPath {dir}/claim.key is an encrypted private key, which fleetprov cannot use: set it to the claim private key's unencrypted PEM file"},
		{name: "claim key does not match", rootOK: true, set: map[string]string{"claimKeyPath": `"other.key"`},
			want: fpk + "claimKeyPath {dir}/other.key does not belong to the claim certificate {dir}/claim.crt (their public keys differ): use the key the claim certificate was issued for"},
		{name: "claim cert missing", rootOK: true, set: map[string]string{"claimCertPath": `"/nonexistent/claim.crt"`},
			want: fpk + "claimCertPath /nonexistent/claim.crt does not exist: set it to the claim certificate's PEM file"},
		{name: "claim cert not PEM", rootOK: true, set: map[string]string{"claimCertPath": `"claim.key"`},
			want: fpk + "claimCertPath {dir}/claim.key is not a PEM certificate: set it to the claim certificate's PEM file"},
		{name: "claim cert is a directory", rootOK: true, set: map[string]string{"claimCertPath": `"."`},
			want: fpk + "claimCertPath {dir} cannot be read (is a directory): set it to the claim certificate's PEM file"},
		{name: "root CA missing", rootOK: true, set: map[string]string{"rootCaPath": `"ca.pem"`},
			want: fpk + "rootCaPath {dir}/ca.pem does not exist: set it to the root CA certificate's PEM file (AmazonRootCA1.pem)"},
		{name: "root CA not PEM", rootOK: true, set: map[string]string{"rootCaPath": `"claim.key"`},
			want: fpk + "rootCaPath {dir}/claim.key is not a PEM certificate: set it to the root CA certificate's PEM file (AmazonRootCA1.pem)"},
		{name: "root CA permission denied", prepare: func(t *testing.T, p pki) { chmod(t, p.ca, 0) },
			want: fpk + "rootCaPath {dir}/AmazonRootCA1.pem cannot be read (permission denied): run as a user that can read it"},
		{name: "unknown payloadFormat", set: map[string]string{"payloadFormat": "xml"}, want: fpk + `payloadFormat "xml" is not a payload format: use json or cbor`},
		{name: "unknown certificateMode", set: map[string]string{"certificateMode": "byok"}, want: fpk + `certificateMode "byok" is not a certificate mode: use csr (the key never leaves the device) or create-keys (the cloud makes the key)`},
		{name: "keyPath with a PIN", set: map[string]string{"keyPath": `"pkcs11:token=t;object=o?module-path=/m.so&pin-value=SECRET-PIN"`},
			want: fpk + "keyPath holds pin-value: the PIN must not be written in config; put it in a file only the provisioning user can read and name that file with pin-source=file:/path"},
		{name: "claimKeyPath with a PIN", set: map[string]string{"claimKeyPath": `"pkcs11:token=t;object=claim?module-path=/m.so&pin-value=SECRET-PIN"`},
			want: fpk + "claimKeyPath holds pin-value: the PIN must not be written in config; put it in a file only the provisioning user can read and name that file with pin-source=file:/path"},
		{name: "create-keys into a token", set: map[string]string{"keyPath": `"pkcs11:token=t;object=o?module-path=/m.so&pin-source=file:/p"`, "certificateMode": "create-keys"},
			want: fpk + "certificateMode is create-keys, where the cloud makes the key and sends it to the device, but keyPath names a key in a token, which cannot take a key made elsewhere: use certificateMode csr"},
		{name: "unknown keyAlgorithm", set: map[string]string{"keyAlgorithm": "ed25519"}, want: fpk + `keyAlgorithm "ed25519" is not a key algorithm: use ecdsa-p256, ecdsa-p384, rsa-2048 or rsa-3072`},
		{name: "unknown restartStrategy", set: map[string]string{"restartStrategy": "reboot"}, want: fpk + `restartStrategy "reboot" is not a restart strategy: use systemd, command or none`},
		{name: "restartCommand missing", set: map[string]string{"restartStrategy": "command"}, want: fpk + "restartCommand is missing: restartStrategy is command, so set restartCommand to the command that restarts Greengrass"},
		{name: "restartUnits empty", set: map[string]string{"restartUnits": "[]"}, want: fpk + "restartUnits is empty: list the systemd units to restart, or set restartStrategy to none"},
		{name: "verify not a boolean", set: map[string]string{"verify": `"maybe"`}, want: fpk + `verify "maybe" is not true or false: write true or false`},
		{name: "retireClaim without verify", set: map[string]string{"verify": "false", "retireClaim": "true"}, want: fpk + "retireClaim is true while verify is false: the claim is retired only once the new certificate is seen to connect; set verify to true, or retireClaim to false"},
		{name: "retireClaim with a claim key in a token", set: map[string]string{"retireClaim": "true", "claimKeyPath": `"pkcs11:token=t;object=claim?module-path=/m.so&pin-source=file:/p"`},
			want: fpk + "retireClaim is true, but claimKeyPath names a key in a token, which fleetprov cannot overwrite and delete like a file: set retireClaim to false and delete the claim key with the token's own tools once the device is provisioned"},
		{name: "env retireClaim not a boolean", env: []string{"FLEETPROV_RETIRE_CLAIM=yes"}, want: `environment variable FLEETPROV_RETIRE_CLAIM "yes" is not true or false: write true or false`},
		{name: "restartUnits mapping item", set: map[string]string{"restartUnits": "[{a: b}]"}, want: fpk + "restartUnits item 1 is not a unit name: list unit names such as greengrass-lite.target"},
		{name: "bad duration", set: map[string]string{"requestTimeout": "30"}, want: fpk + `requestTimeout "30" is not a duration: write it like 30s, 5m or 1h`},
		{name: "zero duration", set: map[string]string{"connectTimeout": "0s"}, want: fpk + `connectTimeout "0s" must be longer than zero: write it like 30s, 5m or 1h`},
		{name: "negative duration", set: map[string]string{"retryDeadline": "-1m"}, want: fpk + `retryDeadline "-1m" must be longer than zero: write it like 30s, 5m or 1h`},
		{name: "margin not below lifetime", set: map[string]string{"tokenLifetime": "5m"}, want: fpk + "tokenMargin (5m0s) is not shorter than tokenLifetime (5m0s): make it shorter, or no token could ever be reused"},
		{name: "mqttPort not a number", set: map[string]string{"mqttPort": "mqtt"}, want: fpk + `mqttPort "mqtt" is not a port number: use 1 to 65535`},
		{name: "mqttPort out of range", set: map[string]string{"mqttPort": "70000"}, want: fpk + `mqttPort "70000" is not a port number: use 1 to 65535`},
		{name: "mqttPort zero", set: map[string]string{"mqttPort": "0"}, want: fpk + `mqttPort "0" is not a port number: use 1 to 65535`},
		{name: "clientId too long", set: map[string]string{"clientId": long(129)}, want: fpk + "clientId is 129 bytes long; AWS IoT accepts client ids of at most 128: shorten it or leave it empty for a random one"},
		{name: "template parameter value too long", set: map[string]string{"templateParams": "{Serial: " + long(4097) + "}"}, want: fpk + "templateParams.Serial is 4097 characters long; AWS IoT accepts parameter values of at most 4096: shorten it"},
		{name: "template parameter name too long", set: map[string]string{"templateParams": `'{"` + long(2049) + `": "x"}'`}, want: fpk + `templateParams has a parameter name 2049 characters long (starting "aaaaaaaaaaaaaaaa..."); AWS IoT accepts names of at most 2048: shorten it`},
		{name: "endpoint not a host", set: map[string]string{"iotDataEndpoint": `"-x.example"`}, want: fpk + `iotDataEndpoint "-x.example" is not a host name: write only the host (or host:port), e.g. xxxx-ats.iot.us-east-1.amazonaws.com`},
		{name: "credentials endpoint with scheme", set: map[string]string{"iotCredEndpoint": "https://c.example"}, want: fpk + `iotCredEndpoint "https://c.example" is not a host name: write only the host (or host:port), e.g. xxxx-ats.iot.us-east-1.amazonaws.com`},
		{name: "token lifetime over an hour", set: map[string]string{"tokenLifetime": "61m"}, want: fpk + "tokenLifetime (1h1m0s) is longer than the 1h AWS IoT honours a certificate ownership token: set it to 1h or less"},
		{name: "key is a list", set: map[string]string{"templateName": "[a]"}, want: fpk + "templateName is a list: write a single value"},
		{name: "stateScriptsDir missing", rootOK: true, set: map[string]string{"stateScriptsDir": `"scripts"`},
			want: fpk + "stateScriptsDir {dir}/scripts does not exist: create it, or remove the key to run no state scripts"},
		{name: "stateScriptsDir is a file", rootOK: true, set: map[string]string{"stateScriptsDir": `"claim.key"`},
			want: fpk + "stateScriptsDir {dir}/claim.key is not a directory: set it to the directory that holds the state scripts"},
		{name: "stateScriptsDir permission denied", set: map[string]string{"stateScriptsDir": `"scripts"`},
			prepare: func(t *testing.T, p pki) {
				if err := os.Mkdir(filepath.Join(filepath.Dir(p.ca), "scripts"), 0); err != nil {
					t.Fatal(err)
				}
			},
			want: fpk + "stateScriptsDir {dir}/scripts cannot be read (permission denied): run as a user that can read it"},
		{name: "stateScriptTimeout zero", set: map[string]string{"stateScriptTimeout": "0s"}, want: fpk + `stateScriptTimeout "0s" must be longer than zero: write it like 30s, 5m or 1h`},
		{name: "env stateScriptsDir", env: []string{"FLEETPROV_STATE_SCRIPTS_DIR=/nonexistent/scripts"},
			want: "environment variable FLEETPROV_STATE_SCRIPTS_DIR /nonexistent/scripts does not exist: create it, or remove the key to run no state scripts"},
		{name: "bad posixUser", raw: "services:\n  aws.greengrass.NucleusLite:\n    configuration:\n      runWithDefault:\n        posixUser: \"ggcore:\"\n",
			want: `config {file}: services.aws.greengrass.NucleusLite.configuration.runWithDefault.posixUser "ggcore:" is not user or user:group: write it like ggcore:ggcore`},

		// Values from flags and the environment are named as such.
		{name: "flag template name", args: []string{"-t", "my template"}, want: `flag -t/--template-name "my template" is not a valid template name: use only letters, digits, '_' and '-'`},
		{name: "flag claim key missing", args: []string{"--claim-key=/nonexistent/k.pem"}, want: "flag -k/--claim-key /nonexistent/k.pem does not exist: set it to the claim private key's PEM file"},
		{name: "flag template params", args: []string{"-p[1]"}, want: `flag -p/--template-params is a JSON list, not an object: write it as a YAML map or a JSON object such as {"SerialNumber": "X"}`},
		{name: "flag endpoint", args: []string{"-e", "https://x"}, want: `flag -e/--endpoint "https://x" is not a host name: write only the host (or host:port), e.g. xxxx-ats.iot.us-east-1.amazonaws.com`},
		{name: "flag out_cert_path and output-dir", args: []string{"-o", "/a", "--out_cert_path", "/b"}, want: "flags --output-dir and --out-cert-path both set the output directory: pass only one"},
		{name: "env mqtt port", env: []string{"FLEETPROV_MQTT_PORT=x"}, want: `environment variable FLEETPROV_MQTT_PORT "x" is not a port number: use 1 to 65535`},
		{name: "env restart strategy", env: []string{"FLEETPROV_RESTART_STRATEGY=reboot"}, want: `environment variable FLEETPROV_RESTART_STRATEGY "reboot" is not a restart strategy: use systemd, command or none`},
		{name: "env template params", env: []string{"FLEETPROV_TEMPLATE_PARAMS=nope"}, want: `environment variable FLEETPROV_TEMPLATE_PARAMS is not a JSON object (invalid character 'o' in literal null (expecting 'u')): write it as a YAML map or a JSON object such as {"SerialNumber": "X"}`},
		{name: "env claim cert", env: []string{"FLEETPROV_CLAIM_CERT_PATH=/nonexistent/c.pem"}, want: "environment variable FLEETPROV_CLAIM_CERT_PATH /nonexistent/c.pem does not exist: set it to the claim certificate's PEM file"},
		{name: "env duration", env: []string{"FLEETPROV_TOKEN_MARGIN=soon"}, want: `environment variable FLEETPROV_TOKEN_MARGIN "soon" is not a duration: write it like 30s, 5m or 1h`},
		{name: "flag wins over env in message", env: []string{"FLEETPROV_TEMPLATE_NAME=a b"}, args: []string{"--template-name=c d"}, want: `flag -t/--template-name "c d" is not a valid template name: use only letters, digits, '_' and '-'`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.prepare != nil && !c.rootOK && os.Geteuid() == 0 {
				t.Skip("root reads any file")
			}
			dir := t.TempDir()
			p := newPKI(t, dir)
			path := filepath.Join(dir, "config.yaml")
			if !c.noFile {
				content := c.raw
				if content == "" {
					keys := goodKeys(p)
					for k, v := range c.set {
						if v == "" {
							delete(keys, k)
						} else {
							keys[k] = v
						}
					}
					content = fp(filepath.Join(dir, "gg"), keys)
				}
				writeFile(t, path, content)
			}
			if c.prepare != nil {
				c.prepare(t, p)
			}
			opts := LoadOptions{Path: path, Environ: c.env}
			if c.args != nil {
				opts.Flags = parseFlags(t, c.args...)
			}
			cfg, err := Load(opts)
			want := strings.NewReplacer("{file}", path, "{dir}", dir).Replace(c.want)
			if err == nil {
				t.Fatalf("Load succeeded (%+v), want error %q", cfg, want)
			}
			if err.Error() != want {
				t.Errorf("error\n got: %s\nwant: %s", err, want)
			}
			if !failure.IsUsage(err) {
				t.Errorf("error %v is not a usage error", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error has more than one line: %q", err)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error quotes key material: %q", err)
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// load writes a valid config with extra keys and loads it with env and args.
func load(t *testing.T, extra map[string]string, env []string, args ...string) (*Config, pki) {
	t.Helper()
	dir := t.TempDir()
	p := newPKI(t, dir)
	keys := goodKeys(p)
	for k, v := range extra {
		if v == "" {
			delete(keys, k)
		} else {
			keys[k] = v
		}
	}
	opts := LoadOptions{Path: writeFile(t, filepath.Join(dir, "config.yaml"), fp(filepath.Join(dir, "gg"), keys)), Environ: env}
	if args != nil {
		opts.Flags = parseFlags(t, args...)
	}
	c, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c, p
}

func TestPrecedence(t *testing.T) {
	file := map[string]string{"templateName": "FromFile", "outputDir": "/file/out"}
	tests := []struct {
		name      string
		env, args []string
		template  string
		outputDir string
	}{
		{"file only", nil, nil, "FromFile", "/file/out"},
		{"env overrides file", []string{"FLEETPROV_TEMPLATE_NAME=FromEnv", "FLEETPROV_OUTPUT_DIR=/env/out"}, nil, "FromEnv", "/env/out"},
		{"flags override file", nil, []string{"-t", "FromFlag", "-o", "/flag/out"}, "FromFlag", "/flag/out"},
		{"flags override env", []string{"FLEETPROV_TEMPLATE_NAME=FromEnv", "FLEETPROV_OUTPUT_DIR=/env/out"}, []string{"--template-name=FromFlag", "--out_cert_path=/flag/out"}, "FromFlag", "/flag/out"},
		{"unset flags do not override", []string{"FLEETPROV_TEMPLATE_NAME=FromEnv"}, []string{}, "FromEnv", "/file/out"},
		{"empty env is unset", []string{"FLEETPROV_TEMPLATE_NAME="}, nil, "FromFile", "/file/out"},
		{"other FLEETPROV_ vars ignored", []string{"FLEETPROV_CONFIG=/elsewhere", "FLEETPROV_LOG_LEVEL=debug"}, nil, "FromFile", "/file/out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := load(t, file, tt.env, tt.args...)
			if c.TemplateName != tt.template || c.OutputDir != tt.outputDir {
				t.Errorf("templateName %q outputDir %q, want %q %q", c.TemplateName, c.OutputDir, tt.template, tt.outputDir)
			}
			if want := filepath.Join(tt.outputDir, "certificate.pem"); c.CertPath != want {
				t.Errorf("CertPath = %q, want %q", c.CertPath, want)
			}
		})
	}
}

func TestFlagValueForms(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	tests := []struct {
		args      []string
		claimKey  string
		outputDir string
	}{
		{[]string{"-k" + p.key}, p.key, ""},
		{[]string{"--claim-key=" + p.key}, p.key, ""},
		{[]string{"-k", p.key}, p.key, ""},
		{[]string{"--claim-key", p.key}, p.key, ""},
		{[]string{"-o/out"}, "", "/out"},
		{[]string{"--output-dir=/out"}, "", "/out"},
		{[]string{"-o", "/out"}, "", "/out"},
		{[]string{"--out_cert_path=/old"}, "", "/old"},
		{[]string{"--out_cert_path", "/old"}, "", "/old"},
		{[]string{"--out-cert-path=/old"}, "", "/old"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			keys := goodKeys(p)
			keys["claimKeyPath"] = `"/nonexistent/file.key"`
			path := writeFile(t, filepath.Join(t.TempDir(), "config.yaml"), fp("/gg", keys))
			c, err := Load(LoadOptions{Path: path, Flags: parseFlags(t, tt.args...), SkipFileChecks: true})
			if err != nil {
				t.Fatal(err)
			}
			wantKey := tt.claimKey
			if wantKey == "" {
				wantKey = "/nonexistent/file.key"
			}
			wantOut := tt.outputDir
			if wantOut == "" {
				wantOut = "/var/lib/greengrass/credentials"
			}
			if c.ClaimKeyPath != wantKey || c.OutputDir != wantOut {
				t.Errorf("claimKeyPath %q outputDir %q, want %q %q", c.ClaimKeyPath, c.OutputDir, wantKey, wantOut)
			}
		})
	}
}

func TestAllFlagsOverride(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	path := writeFile(t, filepath.Join(dir, "config.yaml"), fp("/gg", nil))
	fs := parseFlags(t, "-k"+p.key, "-c", p.cert, "-tT1", "-p", `{"SerialNumber":"S","N":7}`,
		"-e", "h.example:18883", "--root-ca-path="+p.ca, "-o/out")
	c, err := Load(LoadOptions{Path: path, Flags: fs})
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.ClaimKeyPath, c.ClaimCertPath, c.TemplateName, c.TemplateParams, c.IoTDataEndpoint, c.IoTDataHost, c.MQTTPort, c.RootCAPath, c.OutputDir}
	want := []any{p.key, p.cert, "T1", map[string]string{"SerialNumber": "S", "N": "7"}, "h.example:18883", "h.example", 18883, p.ca, "/out"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

func TestTemplateParamsForms(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  []string
		args []string
		want map[string]string
	}{
		{"YAML map keeps literal text", "{SerialNumber: 0x1F, Count: 0123, On: true, F: 1e3, Empty: ~}", nil, nil,
			map[string]string{"SerialNumber": "0x1F", "Count": "0123", "On": "true", "F": "1e3", "Empty": ""}},
		{"JSON string", `'{"SerialNumber": "a2_b9", "N": 12.50, "B": false}'`, nil, nil,
			map[string]string{"SerialNumber": "a2_b9", "N": "12.50", "B": "false"}},
		{"empty JSON string", `""`, nil, nil, map[string]string{}},
		{"absent", "", nil, nil, map[string]string{}},
		{"env JSON replaces YAML map", "{SerialNumber: file}", []string{`FLEETPROV_TEMPLATE_PARAMS={"SerialNumber":"env"}`}, nil,
			map[string]string{"SerialNumber": "env"}},
		{"flag JSON replaces env", "{SerialNumber: file}", []string{`FLEETPROV_TEMPLATE_PARAMS={"SerialNumber":"env"}`}, []string{`-p{"Other":"flag"}`},
			map[string]string{"Other": "flag"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := load(t, map[string]string{"templateParams": tt.yaml}, tt.env, tt.args...)
			if !reflect.DeepEqual(c.TemplateParams, tt.want) {
				t.Errorf("TemplateParams = %v, want %v", c.TemplateParams, tt.want)
			}
		})
	}
}

func TestOwnKeys(t *testing.T) {
	c, _ := load(t, map[string]string{
		"keyAlgorithm":    "RSA-3072",
		"mqttPort":        "443",
		"clientId":        "dev-1",
		"requestTimeout":  "10s",
		"connectTimeout":  "5s",
		"retryDeadline":   "2m",
		"tokenLifetime":   "30m",
		"tokenMargin":     "0s",
		"restartStrategy": "command",
		"restartCommand":  `"reboot now"`,
		"restartUnits":    "[a.service, b.target]",
		"systemctlPath":   "/bin/systemctl",
		"journalPath":     "j/journal",
		"csrPath":         "/x/csr.pem",
		"csrCommonName":   "dev",
		"outputDir":       "creds",
	}, []string{"FLEETPROV_RESTART_UNITS=c.service, d.service"})
	dir := filepath.Dir(c.File)
	got := []any{c.KeyAlgorithm, c.MQTTPort, c.ClientID, c.RequestTimeout, c.ConnectTimeout, c.RetryDeadline, c.TokenLifetime, c.TokenMargin,
		c.RestartStrategy, c.RestartCommand, c.RestartUnits, c.SystemctlPath, c.JournalPath, c.CSRPath, c.CSRCommonName, c.OutputDir, c.KeyPath, c.RootCAOutPath}
	want := []any{"rsa-3072", 443, "dev-1", 10 * time.Second, 5 * time.Second, 2 * time.Minute, 30 * time.Minute, time.Duration(0),
		"command", "reboot now", []string{"c.service", "d.service"}, "/bin/systemctl", filepath.Join(dir, "j/journal"), "/x/csr.pem", "dev",
		filepath.Join(dir, "creds"), filepath.Join(dir, "creds", "priv_key"), filepath.Join(dir, "creds", "AmazonRootCA.pem")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

func TestJournalDefaultFollowsRootPath(t *testing.T) {
	c, _ := load(t, nil, nil)
	if want := filepath.Join(filepath.Dir(c.File), "gg", "fleetprov", "journal"); c.JournalPath != want {
		t.Errorf("JournalPath = %q, want %q", c.JournalPath, want)
	}
}

func TestEndpointPortWins(t *testing.T) {
	c, _ := load(t, map[string]string{"iotDataEndpoint": "localhost:18883", "mqttPort": "443"}, nil)
	if c.MQTTPort != 18883 || c.IoTDataHost != "localhost" {
		t.Errorf("port %d host %q", c.MQTTPort, c.IoTDataHost)
	}
	c, _ = load(t, map[string]string{"iotDataEndpoint": `"[::1]:8884"`}, nil)
	if c.MQTTPort != 8884 || c.IoTDataHost != "::1" {
		t.Errorf("port %d host %q", c.MQTTPort, c.IoTDataHost)
	}
}

func TestRelativeFlagPathsUseWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	t.Chdir(dir)
	path := writeFile(t, filepath.Join(t.TempDir(), "config.yaml"), fp("/gg", goodKeys(p)))
	c, err := Load(LoadOptions{Path: path, Flags: parseFlags(t, "-k", "claim.key")})
	if err != nil {
		t.Fatal(err)
	}
	if c.ClaimKeyPath != p.key {
		t.Errorf("ClaimKeyPath = %q, want %q", c.ClaimKeyPath, p.key)
	}
}

func TestConfigPathChoice(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, filepath.Join(dir, "a.yaml"), "")
	b := writeFile(t, filepath.Join(dir, "b.yaml"), "")
	c := writeFile(t, filepath.Join(dir, "c.yaml"), "")
	tests := []struct {
		name string
		opts LoadOptions
		want string
	}{
		{"Path first", LoadOptions{Path: a, Flags: parseFlags(t, "--config", b), Environ: []string{"FLEETPROV_CONFIG=" + c}}, a},
		{"then --config", LoadOptions{Flags: parseFlags(t, "--config="+b), Environ: []string{"FLEETPROV_CONFIG=" + c}}, b},
		{"then FLEETPROV_CONFIG", LoadOptions{Flags: parseFlags(t), Environ: []string{"FLEETPROV_CONFIG=" + c}}, c},
		{"then the default", LoadOptions{Flags: parseFlags(t)}, DefaultPath},
		{"no flags", LoadOptions{}, DefaultPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := configPath(tt.opts); got != tt.want {
				t.Errorf("configPath = %q, want %q", got, tt.want)
			}
		})
	}
	cfg, err := Load(LoadOptions{Environ: []string{"FLEETPROV_CONFIG=" + c}, SkipFileChecks: true})
	if err != nil || cfg.File != c {
		t.Errorf("Load with FLEETPROV_CONFIG: %v, %v", cfg, err)
	}
}

func TestUnknownKeyWarning(t *testing.T) {
	c, _ := load(t, map[string]string{"templatename": "x", "mystery": "y"}, nil)
	want := []string{
		"config " + c.File + ": services.aws.greengrass.fleet_provisioning.configuration.mystery is not a key fleetprov reads; it is ignored",
		"config " + c.File + ": services.aws.greengrass.fleet_provisioning.configuration.templatename is not a key fleetprov reads; it is ignored (did you mean templateName?)",
	}
	if !reflect.DeepEqual(c.Warnings, want) {
		t.Errorf("Warnings = %q\nwant %q", c.Warnings, want)
	}
}

func TestYAMLAnchorsAndMerge(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	content := "x-common: &common\n  templateName: FromAnchor\n  rootCaPath: " + q(p.ca) + "\n" +
		"services:\n  aws.greengrass.fleet_provisioning:\n    configuration:\n      <<: *common\n" +
		"      templateName: Own\n      claimCertPath: " + q(p.cert) + "\n      claimKeyPath: " + q(p.key) + "\n      iotDataEndpoint: h\n"
	c, err := Load(LoadOptions{Path: writeFile(t, filepath.Join(dir, "config.yaml"), content)})
	if err != nil {
		t.Fatal(err)
	}
	if c.TemplateName != "Own" || c.RootCAPath != p.ca {
		t.Errorf("templateName %q rootCaPath %q", c.TemplateName, c.RootCAPath)
	}
}

func TestEnvNames(t *testing.T) {
	want := map[string]string{
		"claimCertPath": "FLEETPROV_CLAIM_CERT_PATH", "claimKeyPath": "FLEETPROV_CLAIM_KEY_PATH",
		"rootCaPath": "FLEETPROV_ROOT_CA_PATH", "templateName": "FLEETPROV_TEMPLATE_NAME",
		"templateParams": "FLEETPROV_TEMPLATE_PARAMS", "iotDataEndpoint": "FLEETPROV_IOT_DATA_ENDPOINT",
		"iotCredEndpoint": "FLEETPROV_IOT_CRED_ENDPOINT", "csrCommonName": "FLEETPROV_CSR_COMMON_NAME",
		"csrPath": "FLEETPROV_CSR_PATH", "certPath": "FLEETPROV_CERT_PATH", "keyPath": "FLEETPROV_KEY_PATH",
		"outputDir": "FLEETPROV_OUTPUT_DIR", "keyAlgorithm": "FLEETPROV_KEY_ALGORITHM",
		"payloadFormat": "FLEETPROV_PAYLOAD_FORMAT", "certificateMode": "FLEETPROV_CERTIFICATE_MODE", "mqttAlpn": "FLEETPROV_MQTT_ALPN", "journalPath": "FLEETPROV_JOURNAL_PATH",
		"mqttPort": "FLEETPROV_MQTT_PORT", "clientId": "FLEETPROV_CLIENT_ID", "requestTimeout": "FLEETPROV_REQUEST_TIMEOUT",
		"connectTimeout": "FLEETPROV_CONNECT_TIMEOUT", "retryDeadline": "FLEETPROV_RETRY_DEADLINE",
		"tokenLifetime": "FLEETPROV_TOKEN_LIFETIME", "tokenMargin": "FLEETPROV_TOKEN_MARGIN",
		"verify": "FLEETPROV_VERIFY", "retireClaim": "FLEETPROV_RETIRE_CLAIM",
		"restartStrategy": "FLEETPROV_RESTART_STRATEGY", "restartUnits": "FLEETPROV_RESTART_UNITS",
		"restartCommand": "FLEETPROV_RESTART_COMMAND", "systemctlPath": "FLEETPROV_SYSTEMCTL_PATH",
		"pluginDir":       "FLEETPROV_PLUGIN_DIR",
		"stateScriptsDir": "FLEETPROV_STATE_SCRIPTS_DIR", "stateScriptTimeout": "FLEETPROV_STATE_SCRIPT_TIMEOUT",
	}
	got := map[string]string{}
	for _, k := range Keys() {
		got[k.Name] = k.Env
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("env names\n got %v\nwant %v", got, want)
	}
}

// Every key, env var and flag appears in docs/configuration.md.
func TestDocsCoverEveryKey(t *testing.T) {
	b, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, k := range Keys() {
		for _, s := range append([]string{"`" + k.Name + "`", "`" + k.Env + "`"}, k.Flags...) {
			if !strings.Contains(doc, s) {
				t.Errorf("docs/configuration.md does not mention %s", s)
			}
		}
	}
	for _, s := range []string{"FLEETPROV_CONFIG", "--config", "`rootPath`", "`thingName`", "`certificateFilePath`", "`privateKeyPath`", "`awsRegion`", "`iotRoleAlias`", "`posixUser`"} {
		if !strings.Contains(doc, s) {
			t.Errorf("docs/configuration.md does not mention %s", s)
		}
	}
}

// keyPath names a key in a PKCS#11 token by its pkcs11: URI, from the file
// or the environment; there is then no key file.
func TestKeyPathPKCS11URI(t *testing.T) {
	const uri = "pkcs11:token=fleet;object=device;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/fleetprov/pin"
	c, _ := load(t, map[string]string{"keyPath": q(uri)}, nil)
	if c.KeyPath != "" || c.KeyURI != uri {
		t.Errorf("from the file: KeyPath %q KeyURI %q, want no path and the URI as written", c.KeyPath, c.KeyURI)
	}
	c, _ = load(t, nil, []string{"FLEETPROV_KEY_PATH=" + uri})
	if c.KeyPath != "" || c.KeyURI != uri {
		t.Errorf("from the environment: KeyPath %q KeyURI %q", c.KeyPath, c.KeyURI)
	}
	// A claim key in a token is taken as written; the claim certificate
	// and root CA files are still checked.
	const claim = "pkcs11:token=fleet;object=claim?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/fleetprov/pin"
	c, _ = load(t, map[string]string{"claimKeyPath": q(claim)}, nil)
	if c.ClaimKeyPath != claim {
		t.Errorf("ClaimKeyPath %q, want the URI as written", c.ClaimKeyPath)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings for a %d-byte key URI: %q", len(uri), c.Warnings)
	}
	// Greengrass lite cannot read a key URI longer than 127 bytes.
	long := strings.Replace(uri, "/usr/lib/softhsm/", "/usr/lib/x86_64-linux-gnu/softhsm/", 1)
	c, _ = load(t, map[string]string{"keyPath": q(long)}, nil)
	want := fmt.Sprintf("config %s: services.aws.greengrass.fleet_provisioning.configuration.keyPath is 141 bytes long; Greengrass nucleus lite's deployment service (ggdeploymentd, v2.6) reads system.privateKeyPath into 127 bytes and fails on a longer one: shorten the labels or paths in the URI", c.File)
	if len(c.Warnings) != 1 || c.Warnings[0] != want {
		t.Errorf("warnings %q\nwant %q", c.Warnings, want)
	}
	// Served by a plugin: Greengrass gets the key's own URI, and the
	// length that matters is that one's.
	c, _ = load(t, map[string]string{"keyPath": q("plugin:pkcs11/" + uri)}, nil)
	if c.KeyURI != "plugin:pkcs11/"+uri || c.GreengrassKeyPath() != uri || len(c.Warnings) != 0 {
		t.Errorf("plugin key: KeyURI %q, GreengrassKeyPath %q, warnings %q", c.KeyURI, c.GreengrassKeyPath(), c.Warnings)
	}
	c, _ = load(t, map[string]string{"keyPath": `"/keys/device.key"`}, nil)
	if c.KeyPath != "/keys/device.key" || c.KeyURI != "file:/keys/device.key" || c.GreengrassKeyPath() != "/keys/device.key" {
		t.Errorf("a path: KeyPath %q KeyURI %q", c.KeyPath, c.KeyURI)
	}
}

// keyPath and claimKeyPath name a TPM key as Greengrass lite does
// (handle:0x...) or by fleetprov's tpm: URI; Greengrass gets the handle:
// form either way.
func TestKeyPathTPM(t *testing.T) {
	for _, tc := range []struct{ keyPath, greengrass string }{
		{"handle:0x81000002", "handle:0x81000002"},
		{"tpm:handle=0x81000010?device=/dev/tpm0&auth-source=file:/etc/fleetprov/tpm-auth", "handle:0x81000010"},
	} {
		c, _ := load(t, map[string]string{"keyPath": q(tc.keyPath)}, nil)
		if c.KeyPath != "" || c.KeyURI != tc.keyPath || c.GreengrassKeyPath() != tc.greengrass {
			t.Errorf("keyPath %s: KeyPath %q KeyURI %q GreengrassKeyPath %q, want no path, the URI as written and %s", tc.keyPath, c.KeyPath, c.KeyURI, c.GreengrassKeyPath(), tc.greengrass)
		}
	}
	c, _ := load(t, map[string]string{"claimKeyPath": q("handle:0x81000000")}, nil)
	if c.ClaimKeyPath != "handle:0x81000000" {
		t.Errorf("ClaimKeyPath %q, want the handle as written", c.ClaimKeyPath)
	}
}

// A thing name AWS IoT cannot have is refused, at 129 characters as for a
// character outside its alphabet; 128 is accepted.
func TestThingNameLength(t *testing.T) {
	for _, n := range []int{128, 129} {
		dir := t.TempDir()
		p := newPKI(t, dir)
		path := filepath.Join(dir, "config.yaml")
		name := strings.Repeat("n", n)
		content := strings.Replace(fp(filepath.Join(dir, "gg"), goodKeys(p)), "system:\n", "system:\n  thingName: \""+name+"\"\n", 1)
		writeFile(t, path, content)
		_, err := Load(LoadOptions{Path: path})
		want := "config " + path + `: system.thingName "` + strings.Repeat("n", 64) + `..." is not a thing name AWS IoT accepts (1 to 128 of a-z, A-Z, 0-9, ':', '_' and '-'): leave it empty, provisioning sets it`
		switch {
		case n == 128 && err != nil:
			t.Errorf("128 characters: %v", err)
		case n == 129 && (err == nil || err.Error() != want):
			t.Errorf("129 characters: %v\nwant %s", err, want)
		}
	}
}
