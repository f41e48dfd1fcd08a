// Package buildtest is for tests of what a build tag puts into the
// fleetprov binary: the go command to build it with, and a check that the
// default build stays free of a tagged key store's dependencies.
package buildtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Fleetprov is the main package of the fleetprov binary.
const Fleetprov = "github.com/fleetprov/fleetprov/cmd/fleetprov"

// GoTool is the go command, from PATH or the running toolchain; a test
// skips when there is none (a test binary copied to a device).
func GoTool(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		t.Skip("skipping: no go command to build fleetprov with")
	}
	return p
}

// LinksOnlyWithTag fails t unless fleetprov depends on every one of deps
// when built with tag, and on none of them without it: a device that
// does not need the store does not carry it (nor cgo, for PKCS#11).
func LinksOnlyWithTag(t *testing.T, tag string, deps ...string) {
	t.Helper()
	gobin := GoTool(t)
	for _, tags := range []string{"", tag} {
		out, err := exec.Command(gobin, "list", "-tags", tags, "-deps", Fleetprov).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -tags %q: %v\n%s", tags, err, out)
		}
		for _, dep := range deps {
			if got, want := strings.Contains(string(out), dep+"\n"), tags != ""; got != want {
				t.Errorf("tags %q: fleetprov depends on %s: %v, want %v", tags, dep, got, want)
			}
		}
	}
}
