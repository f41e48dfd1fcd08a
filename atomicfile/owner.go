package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// ErrSymlink means a path that fleetprov changes the owner of is a
// symbolic link: the change would land on whatever the link points to.
var ErrSymlink = errors.New("is a symbolic link")

// ChownDir gives the directory dir to owner without following a symbolic
// link at dir: it opens the directory itself (O_NOFOLLOW) and changes the
// owner through that descriptor, so a link put in its place at any moment
// cannot redirect the change to a directory fleetprov does not own. A
// link there is refused with ErrSymlink. Links among dir's parents are
// followed, as for every other path the configuration names.
func ChownDir(dir string, o Owner) error {
	if err := setDir(dir, 0, &o); err != nil {
		return fmt.Errorf("set owner of %s: %w", dir, err)
	}
	return nil
}

// setDir gives the directory dir the mode perm (unless 0) and owner
// (unless nil) through a descriptor of the directory itself.
func setDir(dir string, perm os.FileMode, owner *Owner) error {
	d, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		// Linux says ENOTDIR for a link under O_DIRECTORY|O_NOFOLLOW,
		// other systems ELOOP: ask the path itself.
		if fi, lerr := os.Lstat(dir); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
			return ErrSymlink
		}
		return err
	}
	defer d.Close()
	if perm != 0 {
		if err := d.Chmod(perm); err != nil {
			return err
		}
	}
	if owner != nil {
		if err := d.Chown(owner.UID, owner.GID); err != nil {
			return err
		}
	}
	return nil
}
