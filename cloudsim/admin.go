package cloudsim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"syscall"
)

// fileLock is held by the process serving an emulator directory, so that
// nothing else rewrites its registry meanwhile.
const fileLock = "serve.lock"

// ErrDirInUse: another process serves the emulator directory.
var ErrDirInUse = errors.New("is in use by a running `fleetprov cloud serve`")

// ErrCertificate: a certificate id or status an update cannot take.
var ErrCertificate = errors.New("certificate update refused")

// lockDir takes dir for this process until the returned file is closed
// (or the process ends, however it ends).
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, fileLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s %w", dir, ErrDirInUse)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}

// The length is checked apart: `{64}` would compile into a program 64
// times the size, built at every start of fleetprov.
var certificateIDPattern = regexp.MustCompile(`^[0-9a-f]+$`)

// UpdateCertificate sets a certificate's status in the emulator directory,
// as AWS IoT's UpdateCertificate does: ACTIVE, INACTIVE or REVOKED, and a
// revoked certificate stays revoked. It returns the status it had. The
// emulator must not be serving dir: its registry lives in that process.
func UpdateCertificate(dir, id, status string) (string, error) {
	if len(id) != 64 || !certificateIDPattern.MatchString(id) {
		return "", fmt.Errorf("%w: certificate id %q is not 64 lowercase hex characters (see `fleetprov cloud certs --dir %s --json`)", ErrCertificate, id, dir)
	}
	settable := []string{StatusActive, StatusInactive, StatusRevoked}
	if !slices.Contains(settable, status) {
		return "", fmt.Errorf("%w: new status %q is not one of ACTIVE, INACTIVE, REVOKED", ErrCertificate, status)
	}
	lock, err := lockDir(dir)
	if err != nil {
		if errors.Is(err, ErrDirInUse) {
			return "", fmt.Errorf("%w: stop it, then run this again", err)
		}
		return "", err
	}
	defer lock.Close()
	reg, err := ReadRegistry(dir)
	if err != nil {
		return "", err
	}
	c, ok := reg.Certificates[id]
	if !ok {
		return "", fmt.Errorf("%w: no certificate %s in %s", ErrCertificate, id, dir)
	}
	old := c.Status
	if old == StatusRevoked && status != StatusRevoked {
		return "", fmt.Errorf("%w: certificate %s is REVOKED, which cannot be undone", ErrCertificate, id)
	}
	if old == status {
		return old, nil
	}
	c.Status = status
	if err := compact(dir, reg); err != nil {
		return "", err
	}
	return old, nil
}
