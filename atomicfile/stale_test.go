package atomicfile

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Only WriteFile's own leftovers for that file go: not another file's, not
// a name that merely looks alike, not a symlink.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "priv_key")
	write := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stale1, stale2 := write(".priv_key.tmp-123456"), write(".priv_key.tmp-9")
	keep := []string{write("priv_key"), write(".priv_key.tmp-"), write(".priv_key.tmp-12ab"), write(".certificate.pem.tmp-123"), write("priv_key.tmp-123")}
	target := write("elsewhere")
	link := filepath.Join(dir, ".priv_key.tmp-777")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	keep = append(keep, link, target)

	removed, err := RemoveStale(key)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if want := []string{stale1, stale2}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	for _, p := range []string{stale1, stale2} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there", p)
		}
	}
	for _, p := range keep {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
	if removed, err := RemoveStale(filepath.Join(dir, "missing", "x")); err != nil || len(removed) != 0 {
		t.Errorf("missing directory: %v %v", removed, err)
	}
}
