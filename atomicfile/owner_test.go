package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func ownerOf(t *testing.T, path string) (uid, gid int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

func TestChownDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can give directories away")
	}
	dir := filepath.Join(t.TempDir(), "credentials")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ChownDir(dir, Owner{UID: 65534, GID: 65534}); err != nil {
		t.Fatal(err)
	}
	if uid, gid := ownerOf(t, dir); uid != 65534 || gid != 65534 {
		t.Errorf("owner %d:%d, want 65534:65534", uid, gid)
	}
}

// A symbolic link where the directory should be is refused, and the
// directory it points to keeps its owner.
func TestChownDirRefusesSymlink(t *testing.T) {
	root := t.TempDir()
	target := filepath.Join(root, "etc")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, "credentials")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	uid, gid := ownerOf(t, target)
	err := ChownDir(link, Owner{UID: uid + 1, GID: gid + 1})
	if !errors.Is(err, ErrSymlink) {
		t.Fatalf("ChownDir(link) = %v, want ErrSymlink", err)
	}
	if want := "set owner of " + link + ": is a symbolic link"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if u, g := ownerOf(t, target); u != uid || g != gid {
		t.Errorf("target's owner changed to %d:%d", u, g)
	}
}

// WriteFile over a symbolic link replaces the link and leaves the file it
// pointed to as it was: content, mode and owner are set on a temporary
// file of our own before the rename, never through the link.
func TestWriteFileOverSymlinkLeavesTarget(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "claim.pem")
	if err := os.WriteFile(target, []byte("claim"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "certificate.pem")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	opts := Options{}
	if os.Geteuid() == 0 {
		opts.Owner = &Owner{UID: 65534, GID: 65534}
	}
	if err := WriteFile(path, []byte("device"), 0o600, opts); err != nil {
		t.Fatal(err)
	}
	wantFile(t, target, []byte("claim"), 0o644)
	wantFile(t, path, []byte("device"), 0o600)
	if uid, _ := ownerOf(t, target); opts.Owner != nil && uid == opts.Owner.UID {
		t.Error("the link's target was given away")
	}
}
