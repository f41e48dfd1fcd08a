package cloudsim

import (
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Every rejection the emulator's code makes uses the status the one
// table gives its code, so a device never sees InvalidPayload with 403 in
// one place and 400 in another.
func TestRejectionsFollowTheTable(t *testing.T) {
	fset := gotoken.NewFileSet()
	paths, _ := filepath.Glob("*.go")
	codes := map[string]string{} // constant name -> value
	type call struct {
		pos    string
		status int
		name   string
	}
	var calls []call
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				for i, id := range n.Names {
					if strings.HasPrefix(id.Name, "Code") && i < len(n.Values) {
						if lit, ok := n.Values[i].(*ast.BasicLit); ok && lit.Kind == gotoken.STRING {
							codes[id.Name], _ = strconv.Unquote(lit.Value)
						}
					}
				}
			case *ast.CallExpr:
				if fn, ok := n.Fun.(*ast.Ident); ok && fn.Name == "reject" && len(n.Args) >= 2 {
					lit, ok1 := n.Args[0].(*ast.BasicLit)
					id, ok2 := n.Args[1].(*ast.Ident)
					if ok1 && ok2 {
						st, _ := strconv.Atoi(lit.Value)
						calls = append(calls, call{fset.Position(n.Pos()).String(), st, id.Name})
					}
				}
			}
			return true
		})
	}
	if len(calls) < 10 {
		t.Fatalf("found only %d reject calls; is the scan broken?", len(calls))
	}
	for _, c := range calls {
		code, ok := codes[c.name]
		if !ok {
			t.Errorf("%s: reject with %s, which is not a Code constant", c.pos, c.name)
			continue
		}
		if want := rejectionStatus(code); want != c.status {
			t.Errorf("%s: %s rejected with %d; the table says %d", c.pos, code, c.status, want)
		}
	}
	for name, code := range codes {
		if rejectionStatus(code) == 0 {
			t.Errorf("%s (%s) is not in the rejection table", name, code)
		}
	}
}

// docs/cloud-emulator.md lists the same codes with the same statuses.
func TestRejectionTableMatchesDocs(t *testing.T) {
	b, err := os.ReadFile("../docs/cloud-emulator.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| (\\d{3}) \\| `([A-Za-z]+)` \\|")
	documented := map[string]int{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		documented[m[2]], _ = strconv.Atoi(m[1])
	}
	for _, r := range rejectionTable {
		if got, ok := documented[r.Code]; !ok || got != r.Status {
			t.Errorf("docs list %s with status %d, the code answers %d", r.Code, got, r.Status)
		}
	}
	for code, st := range documented {
		if rejectionStatus(code) != st {
			t.Errorf("docs list %d %s, which the emulator never answers", st, code)
		}
	}
}
