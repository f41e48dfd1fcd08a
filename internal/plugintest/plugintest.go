// Package plugintest builds the test plugin binaries of
// plugins/internal/testplugins (good, bad) for tests that launch real
// plugins, and looks for plugin processes in the process table.
package plugintest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
