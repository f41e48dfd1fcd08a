// Package atomicfile is the one place fleetprov writes a file that must
// survive power loss: a reader sees either the old content or the new, never
// a mix, and once WriteFile returns the new content is on stable storage.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Owner names the numeric owner a file is given after it is written.
// A nil *Owner leaves the owner as the process creates it.
type Owner struct {
	UID, GID int
}

// Options tune WriteFile. The zero value writes with the given mode and
// leaves ownership alone.
type Options struct {
	Owner *Owner
	// MkdirMode, when non-zero, creates missing parent directories with it.
	MkdirMode os.FileMode
}

// WriteFile writes data to path through a temporary file in the same
// directory: write, fsync, chmod/chown, rename over path, fsync the directory.
// The rename is atomic on POSIX filesystems, and the directory fsync makes the
// rename itself durable, so a crash at any point leaves either the old file or
// the complete new one.
func WriteFile(path string, data []byte, perm os.FileMode, opts ...Options) error {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	dir := filepath.Dir(path)
	if o.MkdirMode != 0 {
		if err := os.MkdirAll(dir, o.MkdirMode); err != nil {
			return fmt.Errorf("create directory %s: %w", dir, err)
		}
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmpName := tmp.Name()
	committed := false
	defer func() {
		if !committed {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()
	// Set the mode before any byte is written so a secret never sits in a
	// world-readable temporary file, whatever the umask.
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if o.Owner != nil {
		if err := tmp.Chown(o.Owner.UID, o.Owner.GID); err != nil {
			return fmt.Errorf("set owner of %s: %w", path, err)
		}
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	committed = true
	return SyncDir(dir)
}

// SyncDir fsyncs a directory so that entries created, renamed or removed in
// it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
