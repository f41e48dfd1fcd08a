package main

import (
	"os/exec"
	"strings"
	"testing"
)

// A module that imports fleetprov inherits the main module's requirements.
// Developer tools (the task runner and what it pulls in) live in
// tools/go.mod, so none of them may appear in the main module's graph.
func TestModuleGraphHasNoDeveloperTools(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not on PATH")
	}
	out, err := exec.Command(gobin, "mod", "graph").CombinedOutput()
	if err != nil {
		t.Fatalf("go mod graph: %v\n%s", err, out)
	}
	for _, tool := range []string{"github.com/go-task/task", "mvdan.cc/sh"} {
		if strings.Contains(string(out), tool) {
			t.Errorf("the main module's graph lists %s: keep developer tools in tools/go.mod", tool)
		}
	}
}
