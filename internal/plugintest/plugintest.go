// Package plugintest builds the test plugin binaries of
// plugins/internal/testplugins (good, bad) and the plugin host
// (cmd/fleetprov-plugin-host) for tests that launch real plugins, and
// looks for plugin processes in the process table.
package plugintest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
)

// Build compiles the test plugin named name ("good" or "bad") into dir
// and returns the binary's path.
func Build(dir, name string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "github.com/fleetprov/fleetprov/plugins/internal/testplugins/"+name)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build test plugin %s: %v\n%s", name, err, b)
	}
	return out, nil
}

// Processes lists the running processes whose executable is path, from the
// process table.
func Processes(path string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && exe == path {
			pids = append(pids, pid)
		}
	}
	return pids
}

// HostEnv is the variable that tells fleetprov where its plugin host is
// (plugins/remote.HostEnv).
const HostEnv = "FLEETPROV_PLUGIN_HOST"

var (
	hostOnce sync.Once
	hostPath string
	hostErr  error
)

// Host builds cmd/fleetprov-plugin-host once per test binary, into a
// temporary directory, and sets FLEETPROV_PLUGIN_HOST to it, so that a
// fleetprov under test (this process, or one started with its
// environment) finds it. RemoveHost deletes it.
func Host() (string, error) {
	hostOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fleetprov-plugin-host-")
		if err != nil {
			hostErr = err
			return
		}
		out := filepath.Join(dir, "fleetprov-plugin-host")
		cmd := exec.Command("go", "build", "-o", out, "github.com/fleetprov/fleetprov/cmd/fleetprov-plugin-host")
		if b, err := cmd.CombinedOutput(); err != nil {
			os.RemoveAll(dir)
			hostErr = fmt.Errorf("build the plugin host: %v\n%s", err, b)
			return
		}
		hostPath = out
		hostErr = os.Setenv(HostEnv, out)
	})
	return hostPath, hostErr
}

// RemoveHost deletes what Host built, if it built anything; for TestMain,
// once the tests are done.
func RemoveHost() {
	if hostPath != "" {
		os.RemoveAll(filepath.Dir(hostPath))
	}
}
