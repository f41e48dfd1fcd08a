package engine

import (
	"os"
	"strings"
	"testing"
)

// The diagram in docs/ is generated; this keeps it from drifting from the
// table. Regenerate with `go tool -modfile=tools/go.mod task graph`.
func TestStateDiagramDocIsCurrent(t *testing.T) {
	doc, err := os.ReadFile("../docs/state-diagram.md")
	if err != nil {
		t.Fatal(err)
	}
	g, err := Mermaid()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```mermaid\n"+g+"```") {
		t.Errorf("docs/state-diagram.md is out of date: run `go tool -modfile=tools/go.mod task graph`")
	}
}
