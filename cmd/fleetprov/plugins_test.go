package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
	"github.com/fleetprov/fleetprov/internal/plugintest"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// envPluginStep makes the CLI under test a vendor build with one extra
// step after LoadConfig that starts the key store plugin "good" (by
// opening a plugin: key URI and creating a key in it), says so on stderr,
// then waits for the run to be cancelled; with "panic" it panics instead.
const envPluginStep = "FLEETPROV_TEST_PLUGIN_STEP"

const pluginStarted = "test step: plugin started"

func init() {
	mode := os.Getenv(envPluginStep)
	if mode == "" {
		return
	}
	build.Steps = func(builtin []engine.Step) ([]engine.Step, error) {
		return engine.InsertAfter(builtin, engine.LoadConfig, engine.Step{Name: "StartPlugin", State: startPlugin{mode: mode}})
	}
}

type startPlugin struct{ mode string }

func (s startPlugin) Run(ctx context.Context, _ *engine.Run) error {
	ks, err := keystore.Open("plugin:good/probe")
	if err != nil {
		return err
	}
	if _, err := ks.CreateKey(ctx, &keystore.CreateKeyRequest{URI: "plugin:good/probe", Algorithm: keystore.ECDSAP256}); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, pluginStarted)
	if s.mode == "panic" {
		panic("test step: panicking with a plugin running")
	}
	<-ctx.Done()
	return ctx.Err()
}

// TestPluginStoppedWhenRunEnds starts `fleetprov run` with a plugin
// running, ends the run with SIGTERM, SIGINT or a panic, and looks in the
// process table for the plugin.
func TestPluginStoppedWhenRunEnds(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := goodPlugin(t)
	needHost(t)
	for _, tc := range []struct {
		name   string
		mode   string
		signal syscall.Signal
	}{
		{"SIGTERM", "wait", syscall.SIGTERM},
		{"SIGINT", "wait", syscall.SIGINT},
		{"panic", "panic", 0},
		// fleetprov cannot act on SIGKILL: the plugin notices that its
		// parent is gone and exits by itself.
		{"SIGKILL", "wait", syscall.SIGKILL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			addr, err := cloudsim.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			if err := cloudsim.Init(cloudsim.InitOptions{Dir: dir, Listen: addr}); err != nil {
				t.Fatal(err)
			}
			cfg := filepath.Join(dir, "config.yaml")
			addPlugin(t, cfg, map[string]any{"name": "good", "path": bin})

			cmd := exec.Command(self, "run", "--config", cfg)
			cmd.Env = append(os.Environ(), envBeCLI+"=1", envPluginStep+"="+tc.mode)
			var out cloudtest.Output
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() { _ = cmd.Process.Kill() })

			if tc.signal != 0 {
				waitFor(t, &out, pluginStarted)
				if pids := plugintest.Processes(bin); len(pids) != 1 {
					t.Fatalf("plugin processes while run runs: %v, want one\n%s", pids, out.String())
				}
				if err := cmd.Process.Signal(tc.signal); err != nil {
					t.Fatal(err)
				}
			}
			var exitErr *exec.ExitError
			select {
			case err := <-done:
				if !errorsAs(err, &exitErr) {
					t.Fatalf("run ended with %v, want a non-zero exit\n%s", err, out.String())
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("run did not end within 60s\n%s", out.String())
			}
			if !strings.Contains(out.String(), pluginStarted) {
				t.Fatalf("the plugin never started:\n%s", out.String())
			}
			if tc.signal == syscall.SIGKILL {
				deadline := time.Now().Add(60 * time.Second)
				host, _ := plugintest.Host()
				for len(plugintest.Processes(bin))+len(plugintest.Processes(host)) > 0 && time.Now().Before(deadline) {
					time.Sleep(50 * time.Millisecond)
				}
			}
			if pids := plugintest.Processes(bin); len(pids) != 0 {
				t.Fatalf("plugin processes %v remain after run ended (%s)\n%s", pids, tc.name, out.String())
			}
			host, _ := plugintest.Host()
			if pids := plugintest.Processes(host); len(pids) != 0 {
				t.Fatalf("plugin host processes %v remain after run ended (%s)\n%s", pids, tc.name, out.String())
			}
		})
	}
}

func errorsAs(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	if ok {
		*target = e
	}
	return ok
}

func waitFor(t *testing.T, out *cloudtest.Output, s string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within 60s:\n%s", s, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// goodPlugin builds the good test plugin for this test and returns its
// path.
func goodPlugin(t *testing.T) string {
	t.Helper()
	bin, err := plugintest.Build(t.TempDir(), "good")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// addPlugin lists one plugin in the config's plugins section.
func addPlugin(t *testing.T, cfg string, entry map[string]any) {
	t.Helper()
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	fp := doc["services"].(map[string]any)["aws.greengrass.fleet_provisioning"].(map[string]any)["configuration"].(map[string]any)
	fp["plugins"] = []any{entry}
	if b, err = yaml.Marshal(doc); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
