package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The claim key, claim certificate and root CA are read whole: a device,
// a FIFO or a huge file there is refused at once, naming the key, instead
// of a read that never ends (/dev/zero), blocks (a FIFO) or fills memory.
func TestLoadRefusesInputsThatAreNotPEMFiles(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge.pem")
	if err := os.WriteFile(huge, []byte(strings.Repeat("A", maxInputPEM+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	const fpk = "services.aws.greengrass.fleet_provisioning.configuration."
	for name, tt := range map[string]struct{ key, path, want, fix string }{
		"claim cert /dev/zero": {"claimCertPath", "/dev/zero", "is a character device, not a regular file", "the claim certificate's PEM file"},
		"claim key FIFO":       {"claimKeyPath", fifo, "is a named pipe, not a regular file", "the claim private key's PEM file"},
		"root CA too large":    {"rootCaPath", huge, "is larger than 1024 KiB, too large for a PEM file", "the root CA certificate's PEM file (AmazonRootCA1.pem)"},
	} {
		t.Run(name, func(t *testing.T) {
			paths := map[string]string{"claimKeyPath": p.key, "claimCertPath": p.cert, "rootCaPath": p.ca}
			paths[tt.key] = tt.path
			cfg := filepath.Join(dir, "config.yaml")
			body := "services:\n  aws.greengrass.fleet_provisioning:\n    configuration:\n" +
				"      templateName: T\n      iotDataEndpoint: example.com\n      outputDir: " + filepath.Join(dir, "out") + "\n"
			for k, v := range paths {
				body += "      " + k + ": " + v + "\n"
			}
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { _, err := Load(LoadOptions{Path: cfg}); done <- err }()
			var err error
			select {
			case err = <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("Load did not return within 60 s")
			}
			want := "config " + cfg + ": " + fpk + tt.key + " " + tt.path + " " + tt.want + ": set it to " + tt.fix
			if err == nil || err.Error() != want {
				t.Fatalf("Load = %v\nwant %s", err, want)
			}
		})
	}
}

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
