package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/failure"
)

// A key's PEM text pasted where its file's path belongs is refused, and
// the message does not repeat it: it would otherwise become a file name,
// printed by every message and written into config.yaml and the journal.
// So is a PIN written as its own pin-source.
func TestPastedSecretIsRefused(t *testing.T) {
	const fpk = "config {file}: services.aws.greengrass.fleet_provisioning.configuration."
	const fix = " holds PEM text or a line break, not a file path: write the content into a file (mode 0600 for a key) and give that file's path"
	const pinFix = " holds a pin-source that is neither file:/path nor env:VARIABLE (not shown: it may be the PIN itself): put the PIN in a file only the provisioning user can read and name that file with pin-source=file:/path"
	for _, tc := range []struct {
		name   string
		set    map[string]string
		system string // a line to add under system:
		env    []string
		want   string
	}{
		{name: "keyPath in the file", set: map[string]string{"keyPath": "|\n        -----BEGIN PRIVATE KEY-----\n        SECRETKEYMATERIAL\n        -----END PRIVATE KEY-----"}, want: fpk + "keyPath" + fix},
		{name: "claimKeyPath in the file", set: map[string]string{"claimKeyPath": `"-----BEGIN EC PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END EC PRIVATE KEY-----\n"`}, want: fpk + "claimKeyPath" + fix},
		{name: "claimKeyPath on one line", set: map[string]string{"claimKeyPath": `"-----BEGIN PRIVATE KEY----- SECRETKEYMATERIAL -----END PRIVATE KEY-----"`}, want: fpk + "claimKeyPath" + fix},
		{name: "keyPath from the environment", env: []string{"FLEETPROV_KEY_PATH=-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"}, want: "environment variable FLEETPROV_KEY_PATH" + fix},
		{name: "claimKeyPath from the environment", env: []string{"FLEETPROV_CLAIM_KEY_PATH=-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"}, want: "environment variable FLEETPROV_CLAIM_KEY_PATH" + fix},
		{name: "certPath with a line break", set: map[string]string{"certPath": `"/var/lib/greengrass/cert\nSECRET"`}, want: fpk + "certPath" + fix},
		// Greengrass's own: a key pasted into system.privateKeyPath was
		// printed whole by status and run.
		{name: "system.privateKeyPath", system: `privateKeyPath: "-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"`, want: "config {file}: system.privateKeyPath" + fix},
		{name: "system.certificateFilePath", system: "certificateFilePath: |\n    -----BEGIN CERTIFICATE-----\n    SECRET\n    -----END CERTIFICATE-----", want: "config {file}: system.certificateFilePath" + fix},
		{name: "system.rootCaPath", system: `rootCaPath: "-----BEGIN CERTIFICATE----- SECRET"`, want: "config {file}: system.rootCaPath" + fix},
		// A PIN written where its source belongs.
		{name: "keyPath pin-source is the PIN", set: map[string]string{"keyPath": `"pkcs11:token=t;object=o?module-path=/m.so&pin-source=SECRET-PIN"`}, want: fpk + "keyPath" + pinFix},
		{name: "plugin keyPath pin-source is the PIN", env: []string{"FLEETPROV_KEY_PATH=plugin:p11/pkcs11:token=t;object=o?module-path=/m.so&pin-source=SECRET-PIN"}, want: "environment variable FLEETPROV_KEY_PATH" + pinFix},
		{name: "claimKeyPath pin-source is the PIN", set: map[string]string{"claimKeyPath": `"plugin:p11/pkcs11:token=t;object=c?pin-source=SECRET%2DPIN&module-path=/m.so"`}, want: fpk + "claimKeyPath" + pinFix},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := newPKI(t, dir)
			keys := goodKeys(p)
			for k, v := range tc.set {
				keys[k] = v
			}
			content := fp(filepath.Join(dir, "gg"), keys)
			if tc.system != "" {
				content = strings.Replace(content, "  certificateFilePath: \"\"\n", "", 1)
				content = strings.Replace(content, "system:\n", "system:\n  "+tc.system+"\n", 1)
			}
			path := writeFile(t, filepath.Join(dir, "config.yaml"), content)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Load(LoadOptions{Path: path, Environ: tc.env})
			want := strings.ReplaceAll(tc.want, "{file}", path)
			if err == nil {
				t.Fatalf("Load succeeded (%+v), want error %q", cfg, want)
			}
			if err.Error() != want {
				t.Errorf("error\n got: %s\nwant: %s", err, want)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("the message quotes the secret: %s", err)
			}
			if !failure.IsUsage(err) {
				t.Errorf("error %v is not a usage error", err)
			}
			if after, _ := os.ReadFile(path); string(after) != string(before) {
				t.Error("the config file was changed")
			}
		})
	}
}
