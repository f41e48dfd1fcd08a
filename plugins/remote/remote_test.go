package remote_test

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/internal/plugintest"
	"github.com/fleetprov/fleetprov/internal/syncbuf"
	"github.com/fleetprov/fleetprov/plugins/hook"
	"github.com/fleetprov/fleetprov/plugins/hook/hooktest"
	"github.com/fleetprov/fleetprov/plugins/internal/relay"
	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/keystore/keystoretest"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
	"github.com/fleetprov/fleetprov/plugins/paramsource/paramsourcetest"
	"github.com/fleetprov/fleetprov/plugins/remote"
)

// envRole makes the test binary play another program: "host-v2" a plugin
// host of relay protocol version 2, "fleetprov" a fleetprov that starts
// plugin good through the plugin host, says so, and waits to be killed.
const envRole = "FLEETPROV_TEST_REMOTE_ROLE"

const ready = "plugin good is running"

var goodBin, badBin, hostBin string

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "host-v2":
		os.Exit(hostV2())
	case "host-refusing":
		os.Exit(hostRefusing())
	case "fleetprov":
		os.Exit(waitingFleetprov())
	}
	dir, err := os.MkdirTemp("", "fleetprov-remote-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goodBin, err = plugintest.Build(dir, "good")
	if err == nil {
		badBin, err = plugintest.Build(dir, "bad")
	}
	if err == nil {
		hostBin, err = plugintest.Host()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		plugintest.RemoveHost()
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	plugintest.RemoveHost()
	os.Exit(code)
}

// hostV2 answers as a plugin host of the next protocol version would.
func hostV2() int {
	if err := cbor.NewEncoder(os.Stdout).Encode(map[string]any{"magic": "fleetprov-plugin-host", "version": 2}); err != nil {
		return 1
	}
	var hello any
	_ = cbor.NewDecoder(os.Stdin).Decode(&hello)
	return 2
}

// hostRefusing is a plugin host of this version that refuses its client.
func hostRefusing() int {
	w := relay.NewWriter(os.Stdout)
	if err := w.Write(relay.Hello{Magic: relay.Magic, Version: relay.Version}); err != nil {
		return 1
	}
	var hello relay.Hello
	_ = cbor.NewDecoder(os.Stdin).Decode(&hello)
	_ = w.Write(&relay.Frame{Kind: relay.KindReady, Err: relay.EncodeError(errors.New("no, thank you"))})
	return 2
}

// waitingFleetprov starts plugin good (path in argv[1]) through the
// plugin host and waits to be killed.
func waitingFleetprov() int {
	h := remote.New(remote.Options{Plugins: []config.Plugin{spec("good", os.Args[1])}})
	if _, err := h.KeyStore(context.Background(), "good"); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println(ready)
	select {}
}

func spec(name, path string) config.Plugin {
	return config.Plugin{Name: name, Path: path, StartTimeout: time.Minute, CallTimeout: time.Minute}
}

// newHost returns a Host (closed at the end of the test) and its log. The
// tests of this package do not run in parallel: plugin: key URIs resolve
// against the one open Host, and the process table is shared.
func newHost(t *testing.T, specs ...config.Plugin) (*remote.Host, *syncbuf.Buffer) {
	t.Helper()
	var log syncbuf.Buffer
	h := remote.New(remote.Options{Plugins: specs, Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(func() {
		h.Close()
		assertNoProcess(t, hostBin, "after Close")
	})
	return h, &log
}

func assertNoProcess(t *testing.T, path, when string) {
	t.Helper()
	if pids := plugintest.Processes(path); len(pids) > 0 {
		t.Fatalf("%s: processes %v of %s still run", when, pids, path)
	}
}

// waitNoProcess waits for processes that end on their own (a plugin
// whose host was killed notices within a second).
func waitNoProcess(t *testing.T, path, when string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for len(plugintest.Processes(path)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	assertNoProcess(t, path, when)
}

func TestKeyStoreConformance(t *testing.T) {
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

func TestTLSClientAuth(t *testing.T) {
	h, _ := newHost(t, spec("good", goodBin))
	ks, err := h.KeyStore(context.Background(), "good")
	if err != nil {
		t.Fatal(err)
	}
	keystoretest.TLSClientAuth(t, ks, func(alg keystore.Algorithm, version uint16) string {
		return fmt.Sprintf("plugin:good/tls-%s-%x", alg, version)
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

func TestParamSourceConformance(t *testing.T) {
	h, _ := newHost(t, spec("good", goodBin))
	src, err := h.ParamSource("good")
	if err != nil {
		t.Fatal(err)
	}
	paramsourcetest.Run(t, src)
}

func TestHookConformance(t *testing.T) {
	h, _ := newHost(t, spec("other", goodBin), func() config.Plugin { s := spec("good", goodBin); s.Hook = true; return s }())
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

func TestStartsWhenNeededAndStopsOnClose(t *testing.T) {
	h, log := newHost(t, spec("good", goodBin), spec("other", goodBin))
	if _, err := h.ParamSource("good"); err != nil {
		t.Fatal(err)
	}
	h.Hooks()
	if pids := plugintest.Processes(hostBin); len(pids) != 0 {
		t.Fatalf("plugin host runs before anything used a plugin: %v", pids)
	}
	if _, err := keystore.Open("plugin:good/k"); err != nil {
		t.Fatal(err)
	}
	if pids := plugintest.Processes(hostBin); len(pids) != 1 {
		t.Fatalf("plugin host processes after first use: %v, want one", pids)
	}
	if pids := plugintest.Processes(goodBin); len(pids) != 1 {
		t.Fatalf("plugin processes after first use: %v, want one", pids)
	}
	// A second lookup, and another plugin, reuse the running host.
	if _, err := keystore.Open("plugin:good/k2"); err != nil {
		t.Fatal(err)
	}
	if _, err := keystore.Open("plugin:other/k2"); err != nil {
		t.Fatal(err)
	}
	if pids := plugintest.Processes(hostBin); len(pids) != 1 {
		t.Fatalf("plugin host processes after second use: %v, want one", pids)
	}
	if pids := plugintest.Processes(goodBin); len(pids) != 2 {
		t.Fatalf("plugin processes with two plugins used: %v, want two", pids)
	}
	h.Close()
	assertNoProcess(t, hostBin, "after Close")
	assertNoProcess(t, goodBin, "after Close")

	_, err := keystore.Open("plugin:good/k")
	if want := `key URI "plugin:good/k" names plugin "good", but no plugins are loaded: add it to the plugins section of the fleet_provisioning configuration`; err == nil || err.Error() != want {
		t.Errorf("Open after Close: %v\nwant %s", err, want)
	}
	src, _ := h.ParamSource("good")
	if _, err := src.Params(context.Background(), nil); !errors.Is(err, remote.ErrClosed) || err.Error() != "plugin good: plugins are already stopped" {
		t.Errorf("Params after Close: %v, want ErrClosed", err)
	}

	// The plugin's log records and its plain stderr both reach the log,
	// with its name and level.
	out := log.String()
	for _, want := range []string{
		`level=INFO msg="good plugin starting" plugin=good pid=`,
		`level=INFO msg="plain stderr line from the good plugin" plugin=good`,
		`level=DEBUG msg="plugin started" plugin=good path=` + goodBin + ` took=`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

// The log level fleetprov shows is the host's: records below it do not
// cross.
func TestLogLevel(t *testing.T) {
	var log syncbuf.Buffer
	h := remote.New(remote.Options{Plugins: []config.Plugin{spec("good", goodBin)}, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if _, err := h.KeyStore(context.Background(), "good"); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if out := log.String(); strings.Contains(out, "DEBUG") || !strings.Contains(out, `level=INFO msg="good plugin starting" plugin=good`) {
		t.Errorf("log at info level:\n%s", out)
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
	// The next try starts it again, through the same key store.
	if _, err := ks.GetPublicKey(context.Background(), &keystore.GetPublicKeyRequest{URI: "plugin:crashy/k"}); !errors.Is(err, keystore.ErrKeyNotFound) {
		t.Fatalf("call after a crash: %v, want ErrKeyNotFound from a new plugin", err)
	}
	if pids := plugintest.Processes(badBin); len(pids) != 1 {
		t.Fatalf("processes after restart: %v, want one", pids)
	}
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
	_, err = ks.CreateKey(context.Background(), &keystore.CreateKeyRequest{URI: "plugin:stuck/k", Algorithm: keystore.ECDSAP256})
	want := "plugin stuck did not answer CreateKey within 1s (callTimeout): it was stopped and starts again on the next try"
	if err == nil || err.Error() != want {
		t.Fatalf("CreateKey: %v\nwant %s", err, want)
	}
	if !failure.IsTransient(err) {
		t.Error("a hang is not transient")
	}
	assertNoProcess(t, badBin, "after the hang")
}

// The caller's deadline bounds a call; the host stays usable.
func TestDeadline(t *testing.T) {
	s := spec("stuck", badBin)
	s.Env = map[string]string{"FLEETPROV_TESTPLUGIN_MODE": "hang"}
	h, _ := newHost(t, s, spec("good", goodBin))
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
func TestConcurrentCalls(t *testing.T) {
	hk := spec("audit", goodBin)
	hk.Hook = true
	h, _ := newHost(t, spec("good", goodBin), hk)
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
	audit := h.Hooks()[0]
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
			if _, err := audit.Notify(context.Background(), &hook.NotifyRequest{Event: hook.Event{Kind: hook.Done, State: "Done"}}); err != nil {
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

// The host killed in the middle of a call: the call fails with one
// transient line naming the plugin host, and the next call starts it
// again.
func TestHostKilledMidCall(t *testing.T) {
	s := spec("stuck", badBin)
	s.Env = map[string]string{"FLEETPROV_TESTPLUGIN_MODE": "hang"}
	h, log := newHost(t, s, spec("good", goodBin))
	ks, err := h.KeyStore(context.Background(), "stuck")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := ks.CreateKey(context.Background(), &keystore.CreateKeyRequest{URI: "plugin:stuck/k", Algorithm: keystore.ECDSAP256})
		done <- err
	}()
	hosts := plugintest.Processes(hostBin)
	if len(hosts) != 1 {
		t.Fatalf("plugin host processes: %v, want one", hosts)
	}
	// Give the call time to reach the plugin; whether it has or not, the
	// host's death must end it.
	time.Sleep(200 * time.Millisecond)
	if err := syscall.Kill(hosts[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the call did not end within a minute of the host's death")
	}
	want := "the plugin host " + hostBin + " exited during CreateKey of plugin stuck (crashed or killed; its last output is in the log above): it starts again on the next try"
	if err == nil || err.Error() != want || !failure.IsTransient(err) {
		t.Fatalf("CreateKey: %v (transient %v)\nwant transient %s", err, failure.IsTransient(err), want)
	}
	// Its plugin notices that its parent is gone.
	waitNoProcess(t, badBin, "after the host was killed")

	if _, err := keystore.Open("plugin:good/k"); err != nil {
		t.Fatalf("the call after the host's death: %v", err)
	}
	if pids := plugintest.Processes(hostBin); len(pids) != 1 || pids[0] == hosts[0] {
		t.Fatalf("plugin host processes after restart: %v, want one new one", pids)
	}
	if !strings.Contains(log.String(), "plugin host started") {
		t.Errorf("log does not show the host starting:\n%s", log.String())
	}
}

// A fleetprov killed outright leaves neither its plugin host nor its
// plugins behind.
func TestParentExitLeavesNothing(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, goodBin)
	cmd.Env = append(os.Environ(), envRole+"=fleetprov")
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), ready) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within a minute:\n%s", ready, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if pids := plugintest.Processes(hostBin); len(pids) != 1 {
		t.Fatalf("plugin host processes: %v, want one", pids)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitNoProcess(t, hostBin, "after fleetprov was killed")
	waitNoProcess(t, goodBin, "after fleetprov was killed")
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
		if err == nil || err.Error() != want || !failure.IsUsage(err) {
			t.Errorf("Open(%s): %v\nwant usage error %s", uri, err, want)
		}
	}
	assertNoProcess(t, hostBin, "after failed lookups")
}

// Errors keep their text, class and identity across the relay.
func TestErrorsCross(t *testing.T) {
	h, _ := newHost(t, spec("good", goodBin))
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

func TestHostVersionMismatch(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(plugintest.HostEnv, self)
	t.Setenv(envRole, "host-v2")
	h, _ := newHost(t, spec("good", goodBin))
	_, err = h.KeyStore(context.Background(), "good")
	want := fmt.Sprintf("plugin good: the plugin host %s speaks relay protocol version 2, this fleetprov speaks 1: install the fleetprov-plugin-host built with this fleetprov", self)
	if err == nil || err.Error() != want || failure.IsTransient(err) {
		t.Fatalf("error: %v\nwant fatal %s", err, want)
	}
	if pids := plugintest.Processes(self); len(pids) != 1 || pids[0] != os.Getpid() {
		t.Errorf("processes of the refused host binary: %v, want only this test", pids)
	}
}

func TestHostMissing(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(plugintest.HostEnv, "")
	t.Setenv("PATH", t.TempDir())
	h, _ := newHost(t, spec("good", goodBin))
	_, err = h.KeyStore(context.Background(), "good")
	dir := filepath.Dir(self)
	want := fmt.Sprintf("plugin good needs the plugin host fleetprov-plugin-host, which is in none of %s, /usr/lib/fleetprov, PATH: install it beside fleetprov (go build -o %s/fleetprov-plugin-host ./cmd/fleetprov-plugin-host), or set FLEETPROV_PLUGIN_HOST to its path", dir, dir)
	if _, statErr := os.Stat("/usr/lib/fleetprov/fleetprov-plugin-host"); statErr == nil {
		t.Skip("a plugin host is installed in /usr/lib/fleetprov")
	}
	if err == nil || err.Error() != want || !failure.IsUsage(err) {
		t.Fatalf("error: %v\nwant usage error %s", err, want)
	}

	missing := filepath.Join(t.TempDir(), "fleetprov-plugin-host")
	t.Setenv(plugintest.HostEnv, missing)
	_, err = h.KeyStore(context.Background(), "good")
	want = fmt.Sprintf("plugin good needs the plugin host, but FLEETPROV_PLUGIN_HOST=%s does not exist: set it to the path of fleetprov-plugin-host (go build -o DIR/fleetprov-plugin-host ./cmd/fleetprov-plugin-host), or unset it", missing)
	if err == nil || err.Error() != want || !failure.IsUsage(err) {
		t.Fatalf("error: %v\nwant usage error %s", err, want)
	}
}

// A program that is no plugin host, even one that echoes fleetprov's own
// Hello back, is refused.
func TestNotAHost(t *testing.T) {
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("no cat on PATH")
	}
	t.Setenv(plugintest.HostEnv, cat)
	h, _ := newHost(t, spec("good", goodBin))
	_, err = h.KeyStore(context.Background(), "good")
	want := fmt.Sprintf("plugin good: %s is not a fleetprov plugin host: set FLEETPROV_PLUGIN_HOST to fleetprov-plugin-host, or unset it", cat)
	if err == nil || err.Error() != want {
		t.Fatalf("error: %v\nwant %s", err, want)
	}
}

// A host of this version that refuses fleetprov's Hello is reported so,
// and the real host refuses a client of another version.
func TestHostRefuses(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("client side", func(t *testing.T) {
		t.Setenv(plugintest.HostEnv, self)
		t.Setenv(envRole, "host-refusing")
		h, _ := newHost(t, spec("good", goodBin))
		_, err = h.KeyStore(context.Background(), "good")
		want := fmt.Sprintf("plugin good: the plugin host %s refused this fleetprov (no, thank you): install the fleetprov-plugin-host built with this fleetprov", self)
		if err == nil || err.Error() != want {
			t.Fatalf("error: %v\nwant %s", err, want)
		}
	})
	t.Run("host side", func(t *testing.T) {
		cmd := exec.Command(hostBin)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		if err := relay.NewWriter(in).Write(relay.Hello{Magic: relay.ClientMagic, Version: relay.Version + 1}); err != nil {
			t.Fatal(err)
		}
		dec := cbor.NewDecoder(out)
		var hello relay.Hello
		var ready relay.Frame
		if err := dec.Decode(&hello); err != nil || hello.Magic != relay.Magic || hello.Version != relay.Version {
			t.Fatalf("the host's Hello: %+v, %v", hello, err)
		}
		if err := dec.Decode(&ready); err != nil || ready.Kind != relay.KindReady || ready.Err == nil {
			t.Fatalf("the host's answer to a client of another version: %+v, %v; want a refusal", ready, err)
		}
		want := fmt.Sprintf("it speaks relay protocol version %d, magic \"fleetprov\"; this host speaks version %d, magic \"fleetprov\"", relay.Version+1, relay.Version)
		if got := ready.Err.Decode().Error(); got != want {
			t.Errorf("refusal %q, want %q", got, want)
		}
		if err := cmd.Wait(); err == nil {
			t.Error("the host exited 0 after refusing its client")
		}
	})
}

// This package is what fleetprov links in place of plugins/host: it must
// not bring go-plugin, gRPC or protobuf (or net/rpc's gob) back.
func TestLinksNoPluginMachinery(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not on PATH")
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/hashicorp/go-plugin", "google.golang.org/grpc", "google.golang.org/protobuf", "net/rpc", "encoding/gob"} {
			if pkg == banned || strings.HasPrefix(pkg, banned+"/") {
				t.Errorf("plugins/remote links %s", pkg)
			}
		}
	}
}
