//go:build cgo

package pkcs11

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/internal/buildtest"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
	"github.com/fleetprov/fleetprov/internal/plugintest"
	"github.com/fleetprov/fleetprov/plugins/host"
	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/keystore/keystoretest"
)

// The store passes the key store conformance suite in-process and as the
// fleetprov-keystore-pkcs11 plugin binary, on a real token.
func TestConformance(t *testing.T) {
	tk := newToken(t)
	keystoretest.Run(t, keystoretest.Options{
		Open:          func(t *testing.T) keystore.KeyStore { return New() },
		URI:           func(t *testing.T, name string) string { return tk.uri("inproc-"+name, nil) },
		KeepsExisting: true,
	})
}

func TestConformanceOverPlugin(t *testing.T) {
	tk := newToken(t)
	bin := pluginBinary(t)
	h := host.New(host.Options{
		Plugins: []config.Plugin{{Name: "pkcs11", Path: bin, StartTimeout: time.Minute, CallTimeout: time.Minute}},
		Logger:  slog.New(slog.DiscardHandler),
	})
	defer h.Close()
	keystoretest.Run(t, keystoretest.Options{
		Open: func(t *testing.T) keystore.KeyStore {
			ks, err := keystore.Open("plugin:pkcs11/any")
			if err != nil {
				t.Fatal(err)
			}
			return ks
		},
		URI:           func(t *testing.T, name string) string { return "plugin:pkcs11/" + tk.uri("plugin-"+name, nil) },
		KeepsExisting: true,
	})
	// The plugin's answers are the token's: the same key seen in-process.
	uri := tk.uri("plugin-device-"+string(keystore.ECDSAP256), nil)
	ks, err := keystore.Open("plugin:pkcs11/" + uri)
	if err != nil {
		t.Fatal(err)
	}
	viaPlugin, err := ks.GetPublicKey(context.Background(), &keystore.GetPublicKeyRequest{URI: "plugin:pkcs11/" + uri})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(viaPlugin, tokenPublicKey(t, uri)) {
		t.Error("the plugin answers another key than the token holds")
	}
}

var (
	pluginOnce sync.Once
	pluginPath string
	pluginErr  error
)

// pluginBinary builds cmd/fleetprov-keystore-pkcs11 once per test run.
func pluginBinary(t *testing.T) string {
	t.Helper()
	gobin := buildtest.GoTool(t)
	pluginOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pkcs11-plugin")
		if err != nil {
			pluginErr = err
			return
		}
		pluginPath = filepath.Join(dir, "fleetprov-keystore-pkcs11")
		out, err := exec.Command(gobin, "build", "-o", pluginPath, "github.com/fleetprov/fleetprov/cmd/fleetprov-keystore-pkcs11").CombinedOutput()
		if err != nil {
			pluginErr = &buildError{out: string(out), err: err}
		}
	})
	if pluginErr != nil {
		t.Fatalf("build the plugin: %v", pluginErr)
	}
	// fleetprov runs it through its plugin host.
	if _, err := plugintest.Host(); err != nil {
		t.Fatal(err)
	}
	return pluginPath
}

// removePluginBinary deletes what pluginBinary built, once the tests are
// done.
func removePluginBinary() {
	if pluginPath != "" {
		os.RemoveAll(filepath.Dir(pluginPath))
	}
	plugintest.RemoveHost()
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// fleetprov without the store linked in provisions with the device key in
// the token through the plugin binary; Greengrass gets the key's own
// pkcs11: URI.
func TestProvisionThroughPlugin(t *testing.T) {
	tk := newToken(t)
	c := startCloud(t)
	addPlugin(t, c)
	uri := tk.uri("device", nil)
	keyURI := "plugin:pkcs11/" + uri

	run := plainFleetprov(keyURI, "run", "--config", c.config)
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	cert := cloudtest.ReadCert(t, filepath.Join(c.dir, "device", "credentials", "certificate.pem"))
	if !reflect.DeepEqual(cert.PublicKey, tokenPublicKey(t, uri)) {
		t.Error("the certificate is not for the token's key")
	}
	cloudtest.CheckNoDeviceKeyFile(t, c.dir)
	cfg, err := config.Load(config.LoadOptions{Path: c.config, SkipFileChecks: true})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PrivateKeyPath != uri {
		t.Errorf("system.privateKeyPath = %q, want the key's own URI %q", cfg.PrivateKeyPath, uri)
	}
	st, err := plainFleetprov(keyURI, "status", "--config", c.config).CombinedOutput()
	if err != nil || !strings.Contains(string(st), "key:         "+keyURI+"\n") {
		t.Errorf("status (%v) does not show the key URI:\n%s", err, st)
	}
}

// addPlugin names the fleetprov-keystore-pkcs11 binary as plugin pkcs11 in
// the cloud's config.yaml.
func addPlugin(t *testing.T, c *cloud) {
	t.Helper()
	bin := pluginBinary(t)
	b, err := os.ReadFile(c.config)
	if err != nil {
		t.Fatal(err)
	}
	const anchor = "      restartStrategy: \"none\""
	if !strings.Contains(string(b), anchor) {
		t.Fatalf("config.yaml has no %q", anchor)
	}
	withPlugin := strings.Replace(string(b), anchor, anchor+"\n      plugins:\n        - name: pkcs11\n          path: \""+bin+"\"", 1)
	if err := os.WriteFile(c.config, []byte(withPlugin), 0o644); err != nil {
		t.Fatal(err)
	}
}

// plainFleetprov runs the test binary as fleetprov without the pkcs11 store
// registered in-process: only the plugin can reach the token.
func plainFleetprov(keyURI string, args ...string) *exec.Cmd {
	cmd := fleetprov(keyURI, args...)
	cmd.Env = append(cmd.Env, envBeCLI+"=plain")
	return cmd
}
