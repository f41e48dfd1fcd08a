package faultpoint

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHitReachesTheHandlerUntilRestored(t *testing.T) {
	Hit(FileSynced, "/nowhere") // no handler: nothing happens
	var got []string
	stop := errors.New("stop here")
	restore := Set(func(_ context.Context, name, detail string) error {
		got = append(got, name+" "+detail)
		return stop
	})
	Hit(FileSynced, "/a")
	if err := HitContext(context.Background(), StateEntered, "Persist"); !errors.Is(err, stop) {
		t.Errorf("HitContext returned %v, want the handler's error", err)
	}
	restore()
	Hit(FileSynced, "/b")
	if err := HitContext(context.Background(), StateEntered, "Restart"); err != nil {
		t.Errorf("HitContext without a handler returned %v", err)
	}
	if strings.Join(got, ",") != "file.synced /a,state.entered Persist" {
		t.Errorf("handler saw %q", got)
	}
}

// Only tests may install a handler: a release build must not be able to
// pause or kill itself at a fault point, whatever its environment says.
func TestNoProductCodeInstallsAHandler(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", root, err)
	}
	self, _ := filepath.Abs(".")
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == self || strings.HasPrefix(d.Name(), ".") && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		checked++
		if strings.Contains(string(b), "faultpoint.Set(") {
			rel, _ := filepath.Rel(root, path)
			t.Errorf("%s installs a fault point handler: only _test.go files may", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("checked only %d Go files under %s: is the walk wrong?", checked, root)
	}
}
