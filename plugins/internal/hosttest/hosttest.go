// Package hosttest is the test suite both plugin hosts pass: the
// in-process one (plugins/host) and fleetprov's client of the plugin host
// process (plugins/remote). fleetprov treats them as one: the same
// lookups, the same errors with the same classes, the same lifecycle of
// the plugin processes. Only their tests import this package.
//
// The suite launches real plugins (the good and bad builds of
// plugins/internal/testplugins) and counts their processes in the process
// table, so its cases do not run in parallel, and plugin: key URIs resolve
// against the one Host open.
package hosttest

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/internal/plugintest"
	"github.com/fleetprov/fleetprov/internal/syncbuf"
	"github.com/fleetprov/fleetprov/plugins/hook"
	"github.com/fleetprov/fleetprov/plugins/hook/hooktest"
	"github.com/fleetprov/fleetprov/plugins/internal/pluginkeys"
	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/keystore/keystoretest"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
	"github.com/fleetprov/fleetprov/plugins/paramsource/paramsourcetest"
)

// Host is what the suite uses of a plugin host: *host.Host and
// *remote.Host both are one.
type Host interface {
	KeyStore(ctx context.Context, name string) (keystore.KeyStore, error)
	ParamSource(name string) (paramsource.ParamSource, error)
	Hooks() []hook.Hook
	Close() error
}

// Options say how to make the Host under test and where its processes
// are.
type Options struct {
	// New returns a Host of plugins logging to log, which it closes
	// when the test (or benchmark) ends. The suite may close it first.
	New func(tb testing.TB, log *slog.Logger, plugins ...config.Plugin) Host
	// Good and Bad are the built good and bad test plugins
	// (plugintest.Build).
	Good, Bad string
	// HostProcess is the binary the plugins run under when that is not
	// the test binary (plugins/remote's plugin host): one runs from the
	// first use of a plugin until Close, and none before.
	HostProcess string
	// KeyStoreOutlivesPlugin says that a key store keeps working after
	// its plugin crashed, starting the plugin again, as plugins/remote's
	// does (it calls the plugin by name). plugins/host's key store is
	// the crashed plugin's connection: a new lookup is needed.
	KeyStoreOutlivesPlugin bool
}

// Spec is a plugin of the config with timeouts long enough for a loaded
// test machine.
func Spec(name, path string) config.Plugin {
	return config.Plugin{Name: name, Path: path, StartTimeout: time.Minute, CallTimeout: time.Minute}
}

// AssertNoProcess fails t if a process of the binary at path runs.
func AssertNoProcess(t testing.TB, path, when string) {
	t.Helper()
	if pids := plugintest.Processes(path); len(pids) > 0 {
		t.Fatalf("%s: processes %v of %s still run", when, pids, path)
	}
}

// Run runs the suite's cases, each as a subtest.
func Run(t *testing.T, o Options) {
	s := suite{o}
	for _, c := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"KeyStoreConformance", s.keyStoreConformance},
		{"KeyStoreWithoutOptionalAbilities", s.keyStoreWithoutOptionalAbilities},
		{"TLSClientAuth", s.tlsClientAuth},
		{"ParamSourceConformance", s.paramSourceConformance},
		{"HookConformance", s.hookConformance},
		{"StartsWhenNeededAndStopsOnClose", s.startsWhenNeededAndStopsOnClose},
		{"LogLevel", s.logLevel},
		{"CrashIsTransientAndNamesThePlugin", s.crash},
		{"HangIsStoppedAfterCallTimeout", s.hang},
		{"Deadline", s.deadline},
		{"ConcurrentCalls", s.concurrentCalls},
		{"StartErrors", s.startErrors},
		{"LookupErrors", s.lookupErrors},
		{"ErrorsCross", s.errorsCross},
	} {
		t.Run(c.name, c.run)
	}
}

type suite struct{ Options }

// newHost returns a Host that logs everything, down to debug, and its
// log.
func (s suite) newHost(t *testing.T, plugins ...config.Plugin) (Host, *syncbuf.Buffer) {
	t.Helper()
	var log syncbuf.Buffer
	h := s.New(t, slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})), plugins...)
	return h, &log
}

// wantProcesses fails t unless n processes of path run.
func wantProcesses(t *testing.T, path string, n int, when string) {
	t.Helper()
	if pids := plugintest.Processes(path); len(pids) != n {
		t.Fatalf("processes of %s %s: %v, want %d", path, when, pids, n)
	}
}

// wantHostProcesses is wantProcesses of HostProcess, if there is one.
func (s suite) wantHostProcesses(t *testing.T, n int, when string) {
	t.Helper()
	if s.HostProcess != "" {
		wantProcesses(t, s.HostProcess, n, when)
	}
}

func (s suite) keyStoreConformance(t *testing.T) {
	s.newHost(t, Spec("good", s.Good))
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

func (s suite) keyStoreWithoutOptionalAbilities(t *testing.T) {
	core := Spec("core", s.Good)
	core.Env = map[string]string{"FLEETPROV_TESTPLUGIN_CORE_ONLY": "1"}
	s.newHost(t, core)
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

func (s suite) tlsClientAuth(t *testing.T) {
	h, _ := s.newHost(t, Spec("good", s.Good))
	ks, err := h.KeyStore(context.Background(), "good")
	if err != nil {
		t.Fatal(err)
	}
	keystoretest.TLSClientAuth(t, ks, func(alg keystore.Algorithm, version uint16) string {
		return fmt.Sprintf("plugin:good/tls-%s-%x", alg, version)
	})
}

func (s suite) paramSourceConformance(t *testing.T) {
	h, _ := s.newHost(t, Spec("good", s.Good))
	src, err := h.ParamSource("good")
	if err != nil {
		t.Fatal(err)
	}
	paramsourcetest.Run(t, src)
}

func (s suite) hookConformance(t *testing.T) {
	good := Spec("good", s.Good)
	good.Hook = true
	h, _ := s.newHost(t, Spec("other", s.Good), good)
	hooks := h.Hooks()
	if len(hooks) != 1 {
		t.Fatalf("Hooks() = %v, want only good", hooks)
	}
	if n := hooks[0].(interface{ Name() string }).Name(); n != "plugin good" {
		t.Errorf("hook named %q, want plugin good", n)
	}
	hooktest.Run(t, hooks[0])
	_, err := hooks[0].Notify(context.Background(), &hook.NotifyRequest{Event: hook.Event{Kind: hook.Enter, Data: map[string]any{"error": "no"}}})
	if want := "plugin good: Notify: no"; err == nil || err.Error() != want {
		t.Errorf("hook error %v, want %s", err, want)
	}
}

func (s suite) startsWhenNeededAndStopsOnClose(t *testing.T) {
	h, log := s.newHost(t, Spec("good", s.Good), Spec("other", s.Good))
	if _, err := h.ParamSource("good"); err != nil {
		t.Fatal(err)
	}
	h.Hooks()
	wantProcesses(t, s.Good, 0, "before anything used a plugin")
	s.wantHostProcesses(t, 0, "before anything used a plugin")
	if _, err := keystore.Open("plugin:good/k"); err != nil {
		t.Fatal(err)
	}
	wantProcesses(t, s.Good, 1, "after first use")
	s.wantHostProcesses(t, 1, "after first use")
	// A second lookup reuses the running plugin, and another plugin the
	// running host.
	if _, err := keystore.Open("plugin:good/k2"); err != nil {
		t.Fatal(err)
	}
	wantProcesses(t, s.Good, 1, "after second use")
	if _, err := keystore.Open("plugin:other/k2"); err != nil {
		t.Fatal(err)
	}
	wantProcesses(t, s.Good, 2, "with two plugins used")
	s.wantHostProcesses(t, 1, "with two plugins used")
	h.Close()
	AssertNoProcess(t, s.Good, "after Close")
	if s.HostProcess != "" {
		AssertNoProcess(t, s.HostProcess, "after Close")
	}

	_, err := keystore.Open("plugin:good/k")
	if want := `key URI "plugin:good/k" names plugin "good", but no plugins are loaded: add it to the plugins section of the fleet_provisioning configuration`; err == nil || err.Error() != want {
		t.Errorf("Open after Close: %v\nwant %s", err, want)
	}
	src, _ := h.ParamSource("good")
	if _, err := src.Params(context.Background(), nil); !errors.Is(err, pluginkeys.ErrClosed) || err.Error() != "plugin good: plugins are already stopped" {
		t.Errorf("Params after Close: %v, want ErrClosed", err)
	}

	// The plugin's log records and its plain stderr both reach the log,
	// with its name and level.
	out := log.String()
	for _, want := range []string{
		`level=INFO msg="good plugin starting" plugin=good pid=`,
		`level=INFO msg="plain stderr line from the good plugin" plugin=good`,
		`level=DEBUG msg="plugin started" plugin=good path=` + s.Good + ` took=`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

// The log level of fleetprov's logger holds for the plugins' records too.
func (s suite) logLevel(t *testing.T) {
	var log syncbuf.Buffer
	h := s.New(t, slog.New(slog.NewTextHandler(&log, nil)), Spec("good", s.Good))
	if _, err := h.KeyStore(context.Background(), "good"); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if out := log.String(); strings.Contains(out, "DEBUG") || !strings.Contains(out, `level=INFO msg="good plugin starting" plugin=good`) {
		t.Errorf("log at info level:\n%s", out)
	}
}

func (s suite) crash(t *testing.T) {
	crashy := Spec("crashy", s.Bad)
	crashy.Env = map[string]string{"FLEETPROV_TESTPLUGIN_MODE": "crash"}
	h, log := s.newHost(t, crashy)
	ctx := context.Background()
	ks, err := h.KeyStore(ctx, "crashy")
	if err != nil {
		t.Fatal(err)
	}
	_, err = ks.CreateKey(ctx, &keystore.CreateKeyRequest{URI: "plugin:crashy/k", Algorithm: keystore.ECDSAP256})
	want := "plugin crashy exited during CreateKey (crashed or killed; its last output is in the log above): it starts again on the next try"
	if err == nil || err.Error() != want {
		t.Fatalf("CreateKey: %v\nwant %s", err, want)
	}
	if !failure.IsTransient(err) {
		t.Error("a crash is not transient")
	}
	AssertNoProcess(t, s.Bad, "after the crash")
	if !strings.Contains(log.String(), `level=ERROR msg="panic: bad plugin: crashing in CreateKey as asked" plugin=crashy`) {
		t.Errorf("log lacks the plugin's panic:\n%s", log.String())
	}
	// The next try starts it again: a new plugin, which has no key.
	if s.KeyStoreOutlivesPlugin {
		if _, err := ks.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: "plugin:crashy/k"}); !errors.Is(err, keystore.ErrKeyNotFound) {
			t.Fatalf("call after a crash through the same key store: %v, want ErrKeyNotFound from a new plugin", err)
		}
	}
	again, err := h.KeyStore(ctx, "crashy")
	if err != nil {
		t.Fatalf("lookup after a crash: %v", err)
	}
	if _, err := again.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: "plugin:crashy/k"}); !errors.Is(err, keystore.ErrKeyNotFound) {
		t.Fatalf("call after a crash: %v, want ErrKeyNotFound from a new plugin", err)
	}
	wantProcesses(t, s.Bad, 1, "after restart")
	h.Close()
	AssertNoProcess(t, s.Bad, "after Close")
}

func (s suite) hang(t *testing.T) {
	stuck := Spec("stuck", s.Bad)
	stuck.Env = map[string]string{"FLEETPROV_TESTPLUGIN_MODE": "hang"}
	// Short on purpose: the plugin never answers, so the timeout is
	// the only way the call ends.
	stuck.CallTimeout = time.Second
	h, _ := s.newHost(t, stuck)
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
	AssertNoProcess(t, s.Bad, "after the hang")
}

// The caller's deadline bounds a call; the host stays usable.
func (s suite) deadline(t *testing.T) {
	stuck := Spec("stuck", s.Bad)
	stuck.Env = map[string]string{"FLEETPROV_TESTPLUGIN_MODE": "hang"}
	h, _ := s.newHost(t, stuck, Spec("good", s.Good))
	ks, err := h.KeyStore(context.Background(), "stuck")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = ks.CreateKey(ctx, &keystore.CreateKeyRequest{URI: "plugin:stuck/k", Algorithm: keystore.ECDSAP256})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !failure.IsTransient(err) || !strings.HasPrefix(err.Error(), "plugin stuck: CreateKey: ") {
		t.Fatalf("CreateKey past its deadline: %v (is deadline %v, transient %v), want a transient deadline error naming the plugin", err, errors.Is(err, context.DeadlineExceeded), failure.IsTransient(err))
	}
	if _, err := keystore.Open("plugin:good/k"); err != nil {
		t.Fatalf("the host after a call gave up: %v", err)
	}
}

// Calls are served at once, not one after another: a hook's Notify and
// a key store's Sign (a TLS handshake's) may overlap.
func (s suite) concurrentCalls(t *testing.T) {
	audit := Spec("audit", s.Good)
	audit.Hook = true
	h, _ := s.newHost(t, Spec("good", s.Good), audit)
	ks, err := h.KeyStore(context.Background(), "good")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.CreateKey(context.Background(), &keystore.CreateKeyRequest{URI: "plugin:good/k", Algorithm: keystore.ECDSAP256}); err != nil {
		t.Fatal(err)
	}
	signer, err := ks.CreateSigner(context.Background(), &keystore.CreateSignerRequest{URI: "plugin:good/k"})
	if err != nil {
		t.Fatal(err)
	}
	src, _ := h.ParamSource("good")
	hk := h.Hooks()[0]
	var wg sync.WaitGroup
	errs := make(chan error, 300)
	for i := range 100 {
		wg.Add(3)
		go func() {
			defer wg.Done()
			digest := sha256.Sum256([]byte{byte(i)})
			if _, err := signer.Sign(nil, digest[:], crypto.SHA256); err != nil {
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			res, err := src.Params(context.Background(), &paramsource.ParamsRequest{TemplateName: fmt.Sprint(i), Params: map[string]string{}})
			if err != nil {
				errs <- err
			} else if res.Params["TemplateName"] != fmt.Sprint(i) {
				errs <- fmt.Errorf("call %d answered %v: answers crossed", i, res.Params)
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := hk.Notify(context.Background(), &hook.NotifyRequest{Event: hook.Event{Kind: hook.Done, State: "Done"}}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func (s suite) startErrors(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-exec")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("another build"))
	b, err := os.ReadFile(s.Good)
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
			spec: Spec("v2", s.Bad), env: map[string]string{"FLEETPROV_TESTPLUGIN_MODE": "version"},
			want: fmt.Sprintf("plugin v2: %s speaks plugin protocol version 2, this fleetprov speaks 1: install a build of the plugin made for this fleetprov", s.Bad),
		},
		{
			name: "exits before the handshake",
			spec: Spec("quitter", s.Bad), env: map[string]string{"FLEETPROV_TESTPLUGIN_MODE": "exit"},
			want: fmt.Sprintf("plugin quitter: %s exited before its handshake: is it a fleetprov plugin? see its log lines above", s.Bad),
		},
		{
			name:      "no handshake within startTimeout",
			spec:      func() config.Plugin { p := Spec("mute", s.Bad); p.StartTimeout = time.Second; return p }(),
			env:       map[string]string{"FLEETPROV_TESTPLUGIN_MODE": "mute"},
			want:      fmt.Sprintf("plugin mute: %s did not complete its handshake within 1s (startTimeout): it was stopped; see its log lines above", s.Bad),
			transient: true,
		},
		{
			name: "checksum differs",
			spec: func() config.Plugin { p := Spec("pinned", s.Good); p.SHA256 = sum[:]; return p }(),
			want: fmt.Sprintf("plugin pinned: binary %s has sha256 %s, not the %s the config expects: install the expected build or update sha256 in the plugins section", s.Good, hex.EncodeToString(goodSum[:]), hex.EncodeToString(sum[:])),
		},
		{
			name: "missing binary", spec: Spec("gone", filepath.Join(dir, "gone")), usage: true,
			want: fmt.Sprintf("plugin gone: binary %s does not exist: install it there or set its path in the plugins section", filepath.Join(dir, "gone")),
		},
		{
			name: "not executable", spec: Spec("text", notExec), usage: true,
			want: fmt.Sprintf("plugin text: %s is not an executable file: set path in the plugins section to the plugin binary", notExec),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.Env = tc.env
			h, _ := s.newHost(t, tc.spec)
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
			AssertNoProcess(t, tc.spec.Path, "after the failed start")
		})
	}

	t.Run("checksum matches", func(t *testing.T) {
		pinned := Spec("pinned", s.Good)
		pinned.SHA256 = goodSum[:]
		h, _ := s.newHost(t, pinned)
		if _, err := h.KeyStore(context.Background(), "pinned"); err != nil {
			t.Fatal(err)
		}
	})
}

func (s suite) lookupErrors(t *testing.T) {
	h, _ := s.newHost(t, Spec("good", s.Good), Spec("alpha", s.Good))
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
		if err == nil || err.Error() != want || !failure.IsUsage(err) {
			t.Errorf("Open(%s): %v\nwant usage error %s", uri, err, want)
		}
	}
	AssertNoProcess(t, s.Good, "after failed lookups")
	if s.HostProcess != "" {
		AssertNoProcess(t, s.HostProcess, "after failed lookups")
	}
}

// A plugin's errors reach fleetprov with their text, class and identity.
func (s suite) errorsCross(t *testing.T) {
	h, _ := s.newHost(t, Spec("good", s.Good))
	ctx := context.Background()
	ks, err := h.KeyStore(ctx, "good")
	if err != nil {
		t.Fatal(err)
	}
	_, err = ks.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: "plugin:good/missing"})
	if !errors.Is(err, keystore.ErrKeyNotFound) || failure.IsTransient(err) || !strings.HasPrefix(err.Error(), "plugin good: GetPublicKey: ") {
		t.Errorf("missing key: %v, want ErrKeyNotFound named by the plugin", err)
	}
	src, _ := h.ParamSource("good")
	_, err = src.Params(ctx, &paramsource.ParamsRequest{TemplateName: "busy"})
	if want := "plugin good: Params: echo: busy, try later"; err == nil || err.Error() != want || !failure.IsTransient(err) {
		t.Errorf("busy: %v, want transient %s", err, want)
	}
	_, err = src.Params(ctx, &paramsource.ParamsRequest{TemplateName: "fail"})
	if want := "plugin good: Params: echo: template fail always fails"; err == nil || err.Error() != want || failure.IsTransient(err) || failure.IsUsage(err) {
		t.Errorf("fail: %v, want fatal %s", err, want)
	}
}
