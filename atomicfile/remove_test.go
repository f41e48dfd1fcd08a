package atomicfile

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/fleetprov/fleetprov/internal/faultpoint"
)

// The content is overwritten before the name goes: a second link to the
// same file, which the unlink leaves in place, shows only zeros.
func TestRemoveSecretOverwritesThenUnlinks(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "claim.pem.key")
	secret := bytes.Repeat([]byte("SECRET-KEY-MATERIAL\n"), 500)
	if err := os.WriteFile(p, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other-link")
	if err := os.Link(p, other); err != nil {
		t.Fatal(err)
	}
	var points []string
	var atOverwrite []byte
	restore := faultpoint.Set(func(_ context.Context, name, detail string) error {
		points = append(points, name+" "+filepath.Base(detail))
		if name == faultpoint.FileOverwritten {
			atOverwrite, _ = os.ReadFile(p)
		}
		return nil
	})
	defer restore()
	if err := RemoveSecret(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s still exists (%v)", p, err)
	}
	left, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(left, make([]byte, len(secret))) {
		t.Errorf("the file's content was not overwritten with %d zero bytes: %q...", len(secret), left[:40])
	}
	if !bytes.Equal(atOverwrite, make([]byte, len(secret))) {
		t.Errorf("at %s the file held %d bytes, not all zeros", faultpoint.FileOverwritten, len(atOverwrite))
	}
	want := []string{"file.overwritten claim.pem.key", "file.removed claim.pem.key", "dir.synced " + filepath.Base(dir)}
	if len(points) != len(want) {
		t.Fatalf("points %q, want %q", points, want)
	}
	for i := range want {
		if points[i] != want[i] {
			t.Errorf("point %d: %q, want %q", i, points[i], want[i])
		}
	}
}

// A run killed after the unlink calls it again: nothing left to do.
func TestRemoveSecretMissingFileIsDone(t *testing.T) {
	if err := RemoveSecret(filepath.Join(t.TempDir(), "gone")); err != nil {
		t.Errorf("RemoveSecret of a missing file: %v", err)
	}
}

// A link in the secret's place must not make it overwrite the link's
// target, and a directory is not removed.
func TestRemoveSecretRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(target, []byte("keep me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "claim.pem.crt")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	err := RemoveSecret(link)
	if want := "remove " + link + ": it is a symbolic link, not the file itself: remove the link and its target by hand"; err == nil || err.Error() != want {
		t.Errorf("RemoveSecret(link) = %v, want %q", err, want)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me\n" {
		t.Errorf("the link's target was changed: %q", b)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	err = RemoveSecret(sub)
	if want := "remove " + sub + ": open " + sub + ": is a directory"; err == nil || err.Error() != want {
		t.Errorf("RemoveSecret(directory) = %v, want %q", err, want)
	}
	if _, serr := os.Stat(sub); serr != nil {
		t.Errorf("the directory went: %v", serr)
	}
}
