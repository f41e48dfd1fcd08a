// Package atomicfiletest lets a test see which directories atomicfile
// fsyncs, so it can prove that a rename or a new directory is made durable
// (a sync that is left out fails the test). It is for tests only.
package atomicfiletest

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/fleetprov/fleetprov/atomicfile/internal/seam"
)

// Syncs records directory fsyncs while a test runs.
type Syncs struct {
	mu   sync.Mutex
	dirs []string
}

// Record starts recording every directory fsync in the process until the
// test ends. Tests that record must not run in parallel with each other;
// other tests' syncs may be seen, so ask about the test's own directories.
func Record(t testing.TB) *Syncs { t.Helper(); return RecordWith(t, nil) }

// RecordWith records as Record does and also calls each(dir) at every
// directory fsync, after it succeeded: there a test can look at what the
// sync made durable (a sync that comes before the change it should cover
// proves nothing).
func RecordWith(t testing.TB, each func(dir string)) *Syncs {
	t.Helper()
	s := &Syncs{}
	seam.SetObserver(func(dir string) {
		s.mu.Lock()
		s.dirs = append(s.dirs, filepath.Clean(dir))
		s.mu.Unlock()
		if each != nil {
			each(filepath.Clean(dir))
		}
	})
	t.Cleanup(func() { seam.SetObserver(nil) })
	return s
}

// Count is how many times dir was fsynced since Record or the last Reset.
func (s *Syncs) Count(dir string) int {
	dir = filepath.Clean(dir)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, d := range s.dirs {
		if d == dir {
			n++
		}
	}
	return n
}

// Reset forgets what was recorded so far.
func (s *Syncs) Reset() {
	s.mu.Lock()
	s.dirs = nil
	s.mu.Unlock()
}
