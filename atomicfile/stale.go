package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// RemoveStale removes the temporary files WriteFile and Replace left next
// to each of paths when a process was killed between creating one and
// renaming it into place: ".<name>.tmp-<digits>", regular files only. One
// may hold a whole private key, so they must not outlive the run that made
// them. Each directory is read once, however many of paths it holds. Call
// it only while no other writer of paths can be running (fleetprov holds
// the journal's lock). It returns the names it removed; a directory it
// cannot read or a file it cannot remove is reported in the error, and the
// other directories are still cleaned.
func RemoveStale(paths ...string) ([]string, error) {
	var dirs []string
	prefixes := map[string][]string{}
	for _, p := range paths {
		dir, base := filepath.Split(p)
		if dir == "" {
			dir = "."
		}
		if _, ok := prefixes[dir]; !ok {
			dirs = append(dirs, dir)
		}
		prefixes[dir] = append(prefixes[dir], "."+base+".tmp-")
	}
	var removed []string
	var errs []error
	for _, dir := range dirs {
		r, err := removeStaleIn(dir, prefixes[dir])
		removed = append(removed, r...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

func removeStaleIn(dir string, prefixes []string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		if !isStale(e, prefixes) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("remove %s: %w", p, err)
		}
		removed = append(removed, p)
	}
	return removed, nil
}

func isStale(e fs.DirEntry, prefixes []string) bool {
	if !e.Type().IsRegular() {
		return false
	}
	for _, prefix := range prefixes {
		suffix, ok := strings.CutPrefix(e.Name(), prefix)
		if ok && suffix != "" && strings.Trim(suffix, "0123456789") == "" {
			return true
		}
	}
	return false
}
