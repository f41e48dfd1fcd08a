package atomicfile

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// Several files at once, in two directories: each one's leftovers go, and
// a directory that cannot be read is reported without keeping the other
// clean.
func TestRemoveStaleSeveral(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	stale := []string{
		filepath.Join(a, ".certificate.pem.tmp-1"),
		filepath.Join(a, ".priv_key.tmp-22"),
		filepath.Join(b, ".config.yaml.tmp-333"),
	}
	keep := []string{filepath.Join(a, ".other.tmp-4"), filepath.Join(a, "certificate.pem"), filepath.Join(b, "config.yaml")}
	for _, p := range append(slices.Clone(stale), keep...) {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := RemoveStale(filepath.Join(a, "certificate.pem"), filepath.Join(a, "priv_key"), filepath.Join(b, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	want := slices.Sorted(slices.Values(stale))
	if !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	for _, p := range keep {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}

	if os.Geteuid() == 0 {
		return // root reads any directory
	}
	locked := filepath.Join(a, "locked")
	if err := os.Mkdir(locked, 0o700); err != nil {
		t.Fatal(err)
	}
	left := filepath.Join(b, ".config.yaml.tmp-5")
	if err := os.WriteFile(left, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(locked, 0); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(locked, 0o700)
	removed, err = RemoveStale(filepath.Join(locked, "priv_key"), filepath.Join(b, "config.yaml"))
	if err == nil || !strings.Contains(err.Error(), locked) {
		t.Errorf("unreadable directory: err %v, want one naming %s", err, locked)
	}
	if !slices.Equal(removed, []string{left}) {
		t.Errorf("removed %v, want %v", removed, []string{left})
	}
}
