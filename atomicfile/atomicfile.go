// Package atomicfile is the one place fleetprov writes a file that must
// survive power loss: a reader sees either the old content or the new, never
// a mix, and once WriteFile returns the new content is on stable storage.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/fleetprov/fleetprov/atomicfile/internal/seam"
	"github.com/fleetprov/fleetprov/internal/faultpoint"
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
	// MkdirMode, when non-zero, creates missing parent directories with it,
	// through MkdirAll (so they get Owner too, and are made durable).
	MkdirMode os.FileMode
}

// WriteFile writes data to path through a temporary file in the same
// directory: write, fsync, chmod/chown, rename over path, fsync the directory.
// The rename is atomic on POSIX filesystems, and the directory fsync makes the
// rename itself durable, so a crash at any point leaves either the old file or
// the complete new one.
func WriteFile(path string, data []byte, perm os.FileMode, opts ...Options) error {
	if err := Replace(path, data, perm, opts...); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// Replace is WriteFile without the final fsync of the directory: the new
// content is on stable storage and replaces the old atomically, but the
// rename is durable only once the directory is synced. It is for writing
// several files into one directory and syncing it once (see Dirs): each
// directory fsync costs as much as a file's, and a crash before it leaves
// each file whole, old or new.
func Replace(path string, data []byte, perm os.FileMode, opts ...Options) error {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	dir := filepath.Dir(path)
	if o.MkdirMode != 0 {
		if err := MkdirAll(dir, o.MkdirMode, o.Owner); err != nil {
			return err
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
	faultpoint.Hit(faultpoint.FileCreated, path)
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	faultpoint.Hit(faultpoint.FileWritten, path)
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	faultpoint.Hit(faultpoint.FileSynced, path)
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	committed = true
	faultpoint.Hit(faultpoint.FileRenamed, path)
	return nil
}

// MkdirAll creates dir and whatever parents it lacks, as os.MkdirAll does,
// and makes each creation durable: after making a directory it fsyncs the
// parent that holds the new entry, so a power cut cannot take away a
// directory that files were then written into. Each directory it creates gets
// exactly perm, whatever the umask (a strict umask must not lock Greengrass
// out of its credentials), and owner when that is not nil. Directories that
// exist already keep their mode and owner.
func MkdirAll(dir string, perm os.FileMode, owner *Owner) error {
	dir = filepath.Clean(dir)
	// Walk up to the deepest directory that exists; create below it,
	// top down.
	var missing []string
	for d := dir; ; {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("create directory %s: %w", dir, &fs.PathError{Op: "mkdir", Path: d, Err: syscall.ENOTDIR})
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("create directory %s: %w", dir, err)
		}
		missing = append(missing, d)
		parent := filepath.Dir(d)
		if parent == d {
			break
		}
		d = parent
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := os.Mkdir(d, perm); err != nil {
			// Another process may have made it meanwhile: then it is
			// theirs, as it is, but its entry is synced below all the same.
			if fi, serr := os.Stat(d); !errors.Is(err, fs.ErrExist) || serr != nil || !fi.IsDir() {
				return fmt.Errorf("create directory %s: %w", dir, err)
			}
		} else {
			// Through the new directory itself, not its name: a link put
			// in its place meanwhile must not pass the mode or owner on.
			if err := setDir(d, perm, owner); err != nil {
				return fmt.Errorf("create directory %s: %w", dir, err)
			}
			faultpoint.Hit(faultpoint.DirCreated, d)
		}
		if err := SyncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// Dirs gathers the directories in which entries were renamed, removed or
// created (by Replace, or outside this package), so that each is fsynced
// once when they are all done. The zero value is ready to use.
type Dirs struct {
	list []string
	seen map[string]bool
}

// Add records the directory holding path.
func (ds *Dirs) Add(path string) { ds.AddDir(filepath.Dir(filepath.Clean(path))) }

// AddDir records dir itself, for a change to the directory's own inode
// (its owner, its mode) that must be durable too.
func (ds *Dirs) AddDir(dir string) {
	d := filepath.Clean(dir)
	if ds.seen[d] {
		return
	}
	if ds.seen == nil {
		ds.seen = map[string]bool{}
	}
	ds.seen[d] = true
	ds.list = append(ds.list, d)
}

// Sync fsyncs each recorded directory once, in the order first added, and
// forgets them. It stops at the first failure.
func (ds *Dirs) Sync() error {
	list := ds.list
	ds.list, ds.seen = nil, nil
	for _, d := range list {
		if err := SyncDir(d); err != nil {
			return err
		}
	}
	return nil
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
	seam.DirSynced(dir)
	faultpoint.Hit(faultpoint.DirSynced, dir)
	return nil
}
