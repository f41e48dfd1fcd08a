package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
	"github.com/fleetprov/fleetprov/internal/plugintest"
)

// A plugin the config marks as a hook takes part in `fleetprov run`: it is
// started by the run's first hook event (nothing else in the config uses
// it), the run provisions, and the plugin is gone when the run ends.
func TestHookPluginIsAskedDuringRun(t *testing.T) {
	needHost(t)
	out := runWithHookPlugin(t, envBeCLI+"=1")
	if !strings.Contains(out, "provisioned in") {
		t.Errorf("run did not provision:\n%s", out)
	}
	if !strings.Contains(out, "good plugin starting") || !strings.Contains(out, "plugin=audit") {
		t.Errorf("the hook plugin was never started by the run:\n%s", out)
	}
}

// A build with cli.Build.PluginHost set runs its plugins in its own
// process: the run provisions with the hook plugin asked, though no
// plugin host can be found.
func TestPluginsInProcess(t *testing.T) {
	out := runWithHookPlugin(t, envBeCLI+"=in-process-plugins", "FLEETPROV_PLUGIN_HOST="+filepath.Join(t.TempDir(), "none"))
	if !strings.Contains(out, "provisioned in") || !strings.Contains(out, "good plugin starting") {
		t.Errorf("the run did not provision with the hook plugin asked:\n%s", out)
	}
}

// runWithHookPlugin runs `fleetprov run`, its environment extended by
// env, against a simulated cloud, with the good test plugin as the hook
// "audit" and nothing else using it. It returns the run's output, and
// fails t if the run fails or leaves the plugin running.
func runWithHookPlugin(t *testing.T, env ...string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := goodPlugin(t)
	dir, _ := cloudtest.Start(t, cloudsim.Options{}, nil)
	cfg := filepath.Join(dir, "config.yaml")
	addPlugin(t, cfg, map[string]any{"name": "audit", "path": bin, "hook": true})

	cmd := exec.Command(self, "run", "--config", cfg)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	if pids := plugintest.Processes(bin); len(pids) != 0 {
		t.Errorf("hook plugin processes %v remain after the run", pids)
	}
	return string(out)
}

// A run that uses no plugin starts no plugin host, even with plugins
// configured: with none to be found, it still provisions.
func TestRunWithoutPluginsStartsNoHost(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := cloudtest.Start(t, cloudsim.Options{}, nil)
	cfg := filepath.Join(dir, "config.yaml")
	addPlugin(t, cfg, map[string]any{"name": "unused", "path": filepath.Join(t.TempDir(), "unused")})

	cmd := exec.Command(self, "run", "--config", cfg)
	cmd.Env = append(os.Environ(), envBeCLI+"=1", "FLEETPROV_PLUGIN_HOST="+filepath.Join(t.TempDir(), "none"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "provisioned in") {
		t.Fatalf("run: %v\n%s", err, out)
	}
}
