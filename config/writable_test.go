package config

import (
	"os"
	"path/filepath"
	"testing"
)

// A config whose sections cannot take the provisioned values is refused
// when loaded, before a run makes anything in the cloud that it then
// could not record.
func TestLoadRefusesConfigThatCannotTakeProvisionedValues(t *testing.T) {
	for name, tt := range map[string]struct{ yaml, want string }{
		"system scalar": {"system: 5\n",
			"system (line 1) is not a mapping, so thingName cannot be set in it"},
		"nucleus configuration list": {"services:\n  aws.greengrass.NucleusLite:\n    configuration: [a]\n",
			"services.aws.greengrass.NucleusLite.configuration (line 3) is not a mapping, so iotDataEndpoint cannot be set in it"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(LoadOptions{Path: path, SkipFileChecks: true})
			want := "config " + path + ": " + tt.want + ": make it a mapping (or remove it) so that the provisioned values can be recorded there"
			if err == nil || err.Error() != want {
				t.Fatalf("Load = %v\nwant %s", err, want)
			}
			if b, _ := os.ReadFile(path); string(b) != tt.yaml {
				t.Errorf("config changed to %q", b)
			}
		})
	}
}
