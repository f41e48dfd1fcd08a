package config

import (
	"os"
	"path/filepath"
	"testing"
)

// A NUL byte (YAML's "\0") in a value is refused when the config is
// loaded: no path, host or command can hold one, and the system call
// that would refuse it comes only once the run has begun.
func TestLoadRefusesNULInValues(t *testing.T) {
	for _, key := range []string{"outputDir", "restartCommand", "systemctlPath"} {
		t.Run(key, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "config.yaml")
			values := map[string]string{"templateName": "T", "restartStrategy": "command", "restartCommand": "/bin/true"}
			values[key] = `"a\0b"`
			body := "services:\n  aws.greengrass.fleet_provisioning:\n    configuration:\n"
			for k, v := range values {
				body += "      " + k + ": " + v + "\n"
			}
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(LoadOptions{Path: cfg, SkipFileChecks: true})
			want := "config " + cfg + ": services.aws.greengrass.fleet_provisioning.configuration." + key + ` "a\x00b" holds a NUL byte: remove it`
			if err == nil || err.Error() != want {
				t.Fatalf("Load = %v\nwant %s", err, want)
			}
		})
	}
}
