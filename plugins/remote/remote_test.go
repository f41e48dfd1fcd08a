package remote_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/internal/plugintest"
	"github.com/fleetprov/fleetprov/internal/syncbuf"
	"github.com/fleetprov/fleetprov/plugins/internal/hosttest"
	"github.com/fleetprov/fleetprov/plugins/internal/relay"
	"github.com/fleetprov/fleetprov/plugins/keystore"
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
	h := remote.New(remote.Options{Plugins: []config.Plugin{hosttest.Spec("good", os.Args[1])}})
	if _, err := h.KeyStore(context.Background(), "good"); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println(ready)
	select {}
}

// open returns a Host that is closed, its plugin host gone, when the
// test ends. The tests of this package do not run in parallel: plugin:
// key URIs resolve against the one open Host, and the process table is
// shared.
func open(tb testing.TB, log *slog.Logger, plugins ...config.Plugin) *remote.Host {
	h := remote.New(remote.Options{Plugins: plugins, Logger: log})
	tb.Cleanup(func() {
		h.Close()
		hosttest.AssertNoProcess(tb, hostBin, "after Close")
	})
	return h
}

// suite runs the plugins in the plugin host process.
func suite() hosttest.Options {
	return hosttest.Options{
		New: func(tb testing.TB, log *slog.Logger, plugins ...config.Plugin) hosttest.Host {
			return open(tb, log, plugins...)
		},
		Good:                   goodBin,
		Bad:                    badBin,
		HostProcess:            hostBin,
		KeyStoreOutlivesPlugin: true,
	}
}

func TestHost(t *testing.T) { hosttest.Run(t, suite()) }

// newHost returns a Host and its log, down to debug.
func newHost(t *testing.T, plugins ...config.Plugin) (*remote.Host, *syncbuf.Buffer) {
	t.Helper()
	var log syncbuf.Buffer
	return open(t, slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})), plugins...), &log
}

// waitNoProcess waits for processes that end on their own (a plugin
// whose host was killed notices within a second).
func waitNoProcess(t *testing.T, path, when string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for len(plugintest.Processes(path)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	hosttest.AssertNoProcess(t, path, when)
}

// The host killed in the middle of a call: the call fails with one
// transient line naming the plugin host, and the next call starts it
// again.
func TestHostKilledMidCall(t *testing.T) {
	s := hosttest.Spec("stuck", badBin)
	s.Env = map[string]string{"FLEETPROV_TESTPLUGIN_MODE": "hang"}
	h, log := newHost(t, s, hosttest.Spec("good", goodBin))
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

func TestHostVersionMismatch(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(plugintest.HostEnv, self)
	t.Setenv(envRole, "host-v2")
	h, _ := newHost(t, hosttest.Spec("good", goodBin))
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
	h, _ := newHost(t, hosttest.Spec("good", goodBin))
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
	h, _ := newHost(t, hosttest.Spec("good", goodBin))
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
		h, _ := newHost(t, hosttest.Spec("good", goodBin))
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
