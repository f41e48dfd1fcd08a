package host_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/fleetprov/fleetprov/internal/syncbuf"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/internal/plugintest"
	"github.com/fleetprov/fleetprov/plugins/hook"
	"github.com/fleetprov/fleetprov/plugins/hook/hooktest"
	"github.com/fleetprov/fleetprov/plugins/host"
	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/keystore/keystoretest"
	"github.com/fleetprov/fleetprov/plugins/paramsource/paramsourcetest"
)

var goodBin, badBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleetprov-plugins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goodBin, err = plugintest.Build(dir, "good")
	if err == nil {
		badBin, err = plugintest.Build(dir, "bad")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func spec(name, path string) config.Plugin {
	return config.Plugin{Name: name, Path: path, StartTimeout: time.Minute, CallTimeout: time.Minute}
}

// newHost returns a Host (closed at the end of the test) and its log. The
// tests of this package do not run in parallel: plugin: key URIs resolve
// against the one open Host.
func newHost(t *testing.T, specs ...config.Plugin) (*host.Host, *syncbuf.Buffer) {
	t.Helper()
	var log syncbuf.Buffer
	h := host.New(host.Options{Plugins: specs, Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(func() { h.Close() })
	return h, &log
}

func assertNoProcess(t *testing.T, path, when string) {
	t.Helper()
	if pids := plugintest.Processes(path); len(pids) > 0 {
		t.Fatalf("%s: plugin processes %v of %s still run", when, pids, path)
	}
}

func TestKeyStoreConformanceOverPlugin(t *testing.T) {
	newHost(t, spec("good", goodBin))
	keystoretest.Run(t, keystoretest.Options{
		Open: func(t *testing.T) keystore.KeyStore {
			ks, err := keystore.Open("plugin:good/any")
			if err != nil {
				t.Fatal(err)
			}
			return ks
		},
		URI: func(t *testing.T, name string) string { return "plugin:good/" + name },
	})
}

func TestKeyStoreWithoutOptionalAbilities(t *testing.T) {
	s := spec("core", goodBin)
	s.Env = map[string]string{"FLEETPROV_TESTPLUGIN_CORE_ONLY": "1"}
	newHost(t, s)
	ks, err := keystore.Open("plugin:core/k")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ks.(keystore.KeyImporter); ok {
		t.Error("a plugin without ImportKey is seen as a KeyImporter")
	}
	if _, ok := ks.(keystore.KeyDeleter); ok {
		t.Error("a plugin without DeleteKey is seen as a KeyDeleter")
	}
	if _, ok := ks.(keystore.CertificateStorer); ok {
		t.Error("a plugin without StoreCertificate is seen as a CertificateStorer")
	}
	keystoretest.Run(t, keystoretest.Options{
		Open: func(t *testing.T) keystore.KeyStore { return ks },
		URI:  func(t *testing.T, name string) string { return "plugin:core/" + name },
	})
}

func TestParamSourceConformanceOverPlugin(t *testing.T) {
	h, _ := newHost(t, spec("good", goodBin))
	src, err := h.ParamSource("good")
	if err != nil {
		t.Fatal(err)
	}
	paramsourcetest.Run(t, src)
}

func TestHookConformanceOverPlugin(t *testing.T) {
	h, _ := newHost(t, spec("other", goodBin), func() config.Plugin { s := spec("good", goodBin); s.Hook = true; return s }())
	hooks := h.Hooks()
	if len(hooks) != 1 {
		t.Fatalf("Hooks() = %v, want only good", hooks)
	}
	hooktest.Run(t, hooks[0])
	_, err := hooks[0].Notify(context.Background(), &hook.NotifyRequest{Event: hook.Event{Kind: hook.Enter, Data: map[string]any{"error": "no"}}})
	if want := "plugin good: Notify: no"; err == nil || err.Error() != want {
		t.Errorf("hook error %v, want %s", err, want)
	}
}

func TestStartsWhenNeededAndStopsOnClose(t *testing.T) {
	h, log := newHost(t, spec("good", goodBin))
	if _, err := h.ParamSource("good"); err != nil {
		t.Fatal(err)
	}
	if pids := plugintest.Processes(goodBin); len(pids) != 0 {
		t.Fatalf("plugin runs before anything used it: %v", pids)
	}
	if _, err := keystore.Open("plugin:good/k"); err != nil {
		t.Fatal(err)
	}
	if pids := plugintest.Processes(goodBin); len(pids) != 1 {
		t.Fatalf("plugin processes after first use: %v, want one", pids)
	}
	// A second lookup reuses the running plugin.
	if _, err := keystore.Open("plugin:good/k2"); err != nil {
		t.Fatal(err)
	}
	if pids := plugintest.Processes(goodBin); len(pids) != 1 {
		t.Fatalf("plugin processes after second use: %v, want one", pids)
	}
	h.Close()
	assertNoProcess(t, goodBin, "after Close")

	_, err := keystore.Open("plugin:good/k")
	if want := `key URI "plugin:good/k" names plugin "good", but no plugins are loaded: add it to the plugins section of the fleet_provisioning configuration`; err == nil || err.Error() != want {
		t.Errorf("Open after Close: %v\nwant %s", err, want)
	}
	src, _ := h.ParamSource("good")
	if _, err := src.Params(context.Background(), nil); !errors.Is(err, host.ErrClosed) {
		t.Errorf("Params after Close: %v, want ErrClosed", err)
	}

	// The plugin's log records and its plain stderr both reach the log,
	// with its name.
	out := log.String()
	for _, want := range []string{
		`msg="good plugin starting" plugin=good`,
		`level=INFO msg="plain stderr line from the good plugin" plugin=good`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

func TestCrashIsTransientAndNamesThePlugin(t *testing.T) {
	s := spec("crashy", badBin)
	s.Env = map[string]string{"FLEETPROV_TESTPLUGIN_MODE": "crash"}
	h, log := newHost(t, s)
	ks, err := h.KeyStore(context.Background(), "crashy")
	if err != nil {
		t.Fatal(err)
	}
	_, err = ks.CreateKey(context.Background(), &keystore.CreateKeyRequest{URI: "plugin:crashy/k", Algorithm: keystore.ECDSAP256})
	want := "plugin crashy exited during CreateKey (crashed or killed; its last output is in the log above): it starts again on the next try"
	if err == nil || err.Error() != want {
		t.Fatalf("CreateKey: %v\nwant %s", err, want)
	}
	if !failure.IsTransient(err) {
		t.Error("a crash is not transient")
	}
	assertNoProcess(t, badBin, "after the crash")
	if !strings.Contains(log.String(), `level=ERROR msg="panic: bad plugin: crashing in CreateKey as asked" plugin=crashy`) {
		t.Errorf("log lacks the plugin's panic:\n%s", log.String())
	}
	// The next try starts it again.
	if _, err := h.KeyStore(context.Background(), "crashy"); err != nil {
		t.Fatalf("lookup after a crash: %v", err)
	}
	if pids := plugintest.Processes(badBin); len(pids) != 1 {
		t.Fatalf("processes after restart: %v, want one", pids)
	}
	h.Close()
	assertNoProcess(t, badBin, "after Close")
}

func TestHangIsStoppedAfterCallTimeout(t *testing.T) {
	s := spec("stuck", badBin)
	s.Env = map[string]string{"FLEETPROV_TESTPLUGIN_MODE": "hang"}
	// Short on purpose: the plugin never answers, so the timeout is
	// the only way the call ends.
	s.CallTimeout = time.Second
	h, _ := newHost(t, s)
	ks, err := h.KeyStore(context.Background(), "stuck")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = ks.CreateKey(context.Background(), &keystore.CreateKeyRequest{URI: "plugin:stuck/k", Algorithm: keystore.ECDSAP256})
	want := "plugin stuck did not answer CreateKey within 1s (callTimeout): it was stopped and starts again on the next try"
	if err == nil || err.Error() != want {
		t.Fatalf("CreateKey: %v\nwant %s", err, want)
	}
	if !failure.IsTransient(err) {
		t.Error("a hang is not transient")
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("CreateKey gave up after %s, before the 1s callTimeout", d)
	}
	assertNoProcess(t, badBin, "after the hang")
}

func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-exec")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("another build"))
	b, err := os.ReadFile(goodBin)
	if err != nil {
		t.Fatal(err)
	}
	goodSum := sha256.Sum256(b)

	for _, tc := range []struct {
		name      string
		spec      config.Plugin
		env       map[string]string
		want      string
		usage     bool
		transient bool
	}{
		{
			name: "other protocol version",
			spec: spec("v2", badBin), env: map[string]string{"FLEETPROV_TESTPLUGIN_MODE": "version"},
			want: fmt.Sprintf("plugin v2: %s speaks plugin protocol version 2, this fleetprov speaks 1: install a build of the plugin made for this fleetprov", badBin),
		},
		{
			name: "exits before the handshake",
			spec: spec("quitter", badBin), env: map[string]string{"FLEETPROV_TESTPLUGIN_MODE": "exit"},
			want: fmt.Sprintf("plugin quitter: %s exited before its handshake: is it a fleetprov plugin? see its log lines above", badBin),
		},
		{
			name:      "no handshake within startTimeout",
			spec:      func() config.Plugin { s := spec("mute", badBin); s.StartTimeout = time.Second; return s }(),
			env:       map[string]string{"FLEETPROV_TESTPLUGIN_MODE": "mute"},
			want:      fmt.Sprintf("plugin mute: %s did not complete its handshake within 1s (startTimeout): it was stopped; see its log lines above", badBin),
			transient: true,
		},
		{
			name: "checksum differs",
			spec: func() config.Plugin { s := spec("pinned", goodBin); s.SHA256 = sum[:]; return s }(),
			want: fmt.Sprintf("plugin pinned: binary %s has sha256 %s, not the %s the config expects: install the expected build or update sha256 in the plugins section", goodBin, hex.EncodeToString(goodSum[:]), hex.EncodeToString(sum[:])),
		},
		{
			name: "missing binary", spec: spec("gone", filepath.Join(dir, "gone")), usage: true,
			want: fmt.Sprintf("plugin gone: binary %s does not exist: install it there or set its path in the plugins section", filepath.Join(dir, "gone")),
		},
		{
			name: "not executable", spec: spec("text", notExec), usage: true,
			want: fmt.Sprintf("plugin text: %s is not an executable file: set path in the plugins section to the plugin binary", notExec),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.Env = tc.env
			h, _ := newHost(t, tc.spec)
			_, err := h.KeyStore(context.Background(), tc.spec.Name)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error: %v\nwant %s", err, tc.want)
			}
			if failure.IsUsage(err) != tc.usage {
				t.Errorf("usage error: %v, want %v", failure.IsUsage(err), tc.usage)
			}
			if failure.IsTransient(err) != tc.transient {
				t.Errorf("transient: %v, want %v", failure.IsTransient(err), tc.transient)
			}
			assertNoProcess(t, tc.spec.Path, "after the failed start")
		})
	}

	t.Run("checksum matches", func(t *testing.T) {
		s := spec("pinned", goodBin)
		s.SHA256 = goodSum[:]
		h, _ := newHost(t, s)
		if _, err := h.KeyStore(context.Background(), "pinned"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestLookupErrors(t *testing.T) {
	h, _ := newHost(t, spec("good", goodBin), spec("alpha", goodBin))
	_, err := h.ParamSource("nope")
	want := `plugin "nope" is not in the plugins section of the fleet_provisioning configuration (configured: alpha, good): add it there or fix the name`
	if err == nil || err.Error() != want || !failure.IsUsage(err) {
		t.Errorf("ParamSource(nope): %v\nwant usage error %s", err, want)
	}
	for uri, want := range map[string]string{
		"plugin:nope/k": `plugin "nope" is not in the plugins section of the fleet_provisioning configuration (configured: alpha, good): add it there or fix the name`,
		"plugin:good":   `key URI "plugin:good" is not a plugin key URI: write it as plugin:NAME/KEY, NAME a plugin of the plugins section`,
		"plugin:Bad/k":  `key URI "plugin:Bad/k" is not a plugin key URI: write it as plugin:NAME/KEY, NAME a plugin of the plugins section`,
	} {
		_, err := keystore.Open(uri)
		if err == nil || err.Error() != want {
			t.Errorf("Open(%s): %v\nwant %s", uri, err, want)
		}
	}
	assertNoProcess(t, goodBin, "after failed lookups")
}
