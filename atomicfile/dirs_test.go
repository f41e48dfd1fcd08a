package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/fleetprov/fleetprov/atomicfile/atomicfiletest"
)

func wantDir(t *testing.T, dir string, perm fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != fs.ModeDir|perm {
		t.Errorf("%s mode = %v, want %v", dir, fi.Mode(), fs.ModeDir|perm)
	}
}

// TestMkdirAllSyncsEachParent: every directory made is an entry in its
// parent, and only an fsync of that parent keeps it through a power cut.
func TestMkdirAllSyncsEachParent(t *testing.T) {
	withUmask(t, 0o077)
	syncs := atomicfiletest.Record(t)
	root := t.TempDir()
	a := filepath.Join(root, "greengrass")
	b := filepath.Join(a, "credentials")
	c := filepath.Join(b, "device")
	if err := MkdirAll(c, 0o755, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{root, a, b} {
		if n := syncs.Count(d); n != 1 {
			t.Errorf("%s fsynced %d times, want once (it gained a directory)", d, n)
		}
	}
	if n := syncs.Count(c); n != 0 {
		t.Errorf("%s fsynced %d times, want none (nothing was made in it)", c, n)
	}
	// The mode asked for, though the umask would have narrowed it.
	for _, d := range []string{a, b, c} {
		wantDir(t, d, 0o755)
	}

	// Nothing to make: nothing synced, existing modes kept.
	syncs.Reset()
	if err := os.Chmod(b, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(c, 0o700, nil); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(root, 0o700, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{root, a, b, c} {
		if n := syncs.Count(d); n != 0 {
			t.Errorf("%s fsynced %d times when nothing was made, want none", d, n)
		}
	}
	wantDir(t, b, 0o711)
	wantDir(t, c, 0o755)
}

func TestWriteFileSyncsNewDirectories(t *testing.T) {
	syncs := atomicfiletest.Record(t)
	root := t.TempDir()
	gg := filepath.Join(root, "greengrass")
	cred := filepath.Join(gg, "credentials")
	if err := WriteFile(filepath.Join(cred, "priv_key"), []byte("k"), 0o600, Options{MkdirMode: 0o700}); err != nil {
		t.Fatal(err)
	}
	// root and greengrass gained a directory; credentials gained the file.
	for _, d := range []string{root, gg, cred} {
		if n := syncs.Count(d); n != 1 {
			t.Errorf("%s fsynced %d times, want once", d, n)
		}
	}
}

func TestMkdirAllInTheWay(t *testing.T) {
	root := t.TempDir()
	blocker := filepath.Join(root, "credentials")
	if err := os.WriteFile(blocker, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{blocker, filepath.Join(blocker, "device")} {
		err := MkdirAll(dir, 0o755, nil)
		if !errors.Is(err, syscall.ENOTDIR) {
			t.Fatalf("MkdirAll(%s) = %v, want ENOTDIR", dir, err)
		}
		var want string
		if dir == blocker {
			want = "create directory " + dir + ": mkdir " + blocker + ": not a directory"
		} else {
			want = "create directory " + dir + ": stat " + dir + ": not a directory"
		}
		if err.Error() != want {
			t.Errorf("MkdirAll(%s) = %q, want %q", dir, err, want)
		}
	}
	if got, _ := os.ReadFile(blocker); string(got) != "not a directory" {
		t.Errorf("the blocking file was changed to %q", got)
	}
}

func TestMkdirAllOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can give directories away")
	}
	root := t.TempDir()
	dir := filepath.Join(root, "greengrass", "credentials")
	if err := MkdirAll(dir, 0o700, &Owner{UID: 65534, GID: 65534}); err != nil {
		t.Fatal(err)
	}
	owner := func(d string) (uint32, uint32) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return st.Uid, st.Gid
	}
	for _, d := range []string{filepath.Join(root, "greengrass"), dir} {
		if u, g := owner(d); u != 65534 || g != 65534 {
			t.Errorf("%s owner = %d:%d, want 65534:65534", d, u, g)
		}
	}
	// A directory that was there already is not given away.
	if u, _ := owner(root); int(u) != os.Geteuid() {
		t.Errorf("existing %s owner changed to %d", root, u)
	}
}

func TestDirsSyncsEachOnce(t *testing.T) {
	syncs := atomicfiletest.Record(t)
	one, two := t.TempDir(), t.TempDir()
	var ds Dirs
	for _, p := range []string{"certificate.pem", "priv_key", "AmazonRootCA.pem"} {
		ds.Add(filepath.Join(one, p))
	}
	ds.Add(filepath.Join(two, "journal"))
	ds.Add(filepath.Join(one, "sub", "..", "csr.pem"))
	if err := ds.Sync(); err != nil {
		t.Fatal(err)
	}
	if n1, n2 := syncs.Count(one), syncs.Count(two); n1 != 1 || n2 != 1 {
		t.Errorf("fsyncs: %s %d, %s %d; want each once", one, n1, two, n2)
	}
	// Sync forgets: a second one syncs nothing.
	if err := ds.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := syncs.Count(one); n != 1 {
		t.Errorf("a second Sync fsynced %s again", one)
	}

	missing := filepath.Join(two, "absent")
	ds.Add(filepath.Join(missing, "x"))
	err := ds.Sync()
	if !errors.Is(err, fs.ErrNotExist) || err.Error() != "sync directory "+missing+": open "+missing+": no such file or directory" {
		t.Errorf("Sync of a missing directory = %v", err)
	}
}
