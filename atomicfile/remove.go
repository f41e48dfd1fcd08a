package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/fleetprov/fleetprov/internal/faultpoint"
)

// RemoveSecret deletes a file that held a secret so that its content does
// not outlive it on disk: it overwrites the whole file with zeros, fsyncs
// it, unlinks it and fsyncs its directory. A file that does not exist is
// already removed: calling it again after a crash finishes the job. It
// refuses anything but a regular file, so a link put in the file's place
// cannot turn the overwrite onto another file.
//
// On storage that writes elsewhere than where the data was (flash with wear
// levelling, copy-on-write filesystems) the overwrite may miss the old
// blocks; the unlink still removes the file from every reader's view.
func RemoveSecret(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if errors.Is(err, syscall.ELOOP) {
		return fmt.Errorf("remove %s: it is a symbolic link, not the file itself: remove the link and its target by hand", path)
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("remove %s: it is not a regular file (%s): remove it by hand", path, fi.Mode().Type())
	}
	if _, err := io.CopyN(f, zeros{}, fi.Size()); err != nil {
		return fmt.Errorf("overwrite %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	faultpoint.Hit(faultpoint.FileOverwritten, path)
	if err := f.Close(); err != nil {
		return fmt.Errorf("overwrite %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	faultpoint.Hit(faultpoint.FileRemoved, path)
	return SyncDir(filepath.Dir(path))
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
