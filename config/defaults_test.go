package config

import (
	"errors"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// A build's defaults fill what the file, the environment and the flags
// leave unset or empty, and lose to each of them; a message about a
// default's value names it as the build's.
func TestBuildDefaults(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	keys := goodKeys(p)
	delete(keys, "templateName")
	keys["restartStrategy"] = `""`
	file := writeFile(t, filepath.Join(dir, "config.yaml"), fp(dir, keys))
	defaults := map[string]any{"templateName": "AcmeFleetTemplate", "restartStrategy": "none", "requestTimeout": "45s"}

	c, err := Load(LoadOptions{Path: file, Defaults: defaults})
	if err != nil {
		t.Fatal(err)
	}
	if c.TemplateName != "AcmeFleetTemplate" || c.RestartStrategy != "none" || c.RequestTimeout != 45*time.Second {
		t.Errorf("defaults not applied: template %q, restart %q, timeout %s", c.TemplateName, c.RestartStrategy, c.RequestTimeout)
	}

	keys["templateName"] = `"FromFile"`
	writeFile(t, file, fp(dir, keys))
	c, err = Load(LoadOptions{Path: file, Defaults: defaults, Environ: []string{"FLEETPROV_REQUEST_TIMEOUT=7s"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.TemplateName != "FromFile" || c.RequestTimeout != 7*time.Second {
		t.Errorf("file or environment lost to a default: template %q, timeout %s", c.TemplateName, c.RequestTimeout)
	}

	_, err = Load(LoadOptions{Path: file, Defaults: map[string]any{"restartStrategy": "reboot"}})
	if err == nil || !strings.Contains(err.Error(), `this build's default for restartStrategy "reboot" is not a restart strategy`) {
		t.Errorf("bad default: %v", err)
	}
	_, err = Load(LoadOptions{Path: file, Defaults: map[string]any{"templateNmae": "X"}})
	if err == nil || err.Error() != `build default "templateNmae" is not a key of the fleet_provisioning configuration (see docs/configuration.md)` {
		t.Errorf("unknown default key: %v", err)
	}
}

// A build's own default config path is read when nothing names one.
func TestBuildDefaultPath(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	file := writeFile(t, filepath.Join(dir, "acme.yaml"), fp(dir, goodKeys(p)))
	c, err := Load(LoadOptions{DefaultPath: file, Flags: parseFlags(t)})
	if err != nil || c.File != file {
		t.Fatalf("config %v, %v; want %s read", c, err, file)
	}
	if _, err := Load(LoadOptions{DefaultPath: file, Environ: []string{"FLEETPROV_CONFIG=/nonexistent.yaml"}}); err == nil || !strings.Contains(err.Error(), "/nonexistent.yaml not found") {
		t.Errorf("FLEETPROV_CONFIG lost to the build's path: %v", err)
	}
}

// A key-store scheme a build registered in-process names a key in that
// store: keyPath holds its URI, not a file's path.
func TestRegisteredKeySchemeInKeyPath(t *testing.T) {
	keystore.Register("testse", func(*url.URL) (keystore.KeyStore, error) { return nil, errors.New("not used") })
	dir := t.TempDir()
	p := newPKI(t, dir)
	keys := goodKeys(p)
	keys["keyPath"] = `"testse:slot=3"`
	file := writeFile(t, filepath.Join(dir, "config.yaml"), fp(dir, keys))
	c, err := Load(LoadOptions{Path: file})
	if err != nil {
		t.Fatal(err)
	}
	if c.KeyURI != "testse:slot=3" || c.KeyPath != "" || c.GreengrassKeyPath() != "testse:slot=3" {
		t.Errorf("key URI %q, path %q, Greengrass sees %q", c.KeyURI, c.KeyPath, c.GreengrassKeyPath())
	}
	if IsKeyURI("unregistered:slot=3") || IsKeyURI("file:/k") {
		t.Error("an unregistered scheme or file: taken for a key store's URI")
	}
}

// A second YAML document is refused, not ignored and then dropped by the
// write-back.
func TestSecondYAMLDocumentRefused(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	first := fp(dir, goodKeys(p))
	file := writeFile(t, filepath.Join(dir, "config.yaml"), first+"---\nsystem:\n  thingName: other\n")
	_, err := Load(LoadOptions{Path: file})
	// The second document starts at its "---", the line after the first.
	line := strings.Count(first, "\n") + 1
	want := "config " + file + " holds more than one YAML document (a second starts at line " + strconv.Itoa(line) + "): Greengrass reads only the first, and writing the provisioned values back would drop the rest; keep the configuration in one document"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant  %s", err, want)
	}
	// A single document that starts with "---" is fine.
	writeFile(t, file, "---\n"+fp(dir, goodKeys(p)))
	if _, err := Load(LoadOptions{Path: file}); err != nil {
		t.Errorf("one document after ---: %v", err)
	}
}
