// Package faultpoint names the moments fleetprov makes something durable (a
// journal record, a file, a rename, a directory) so that a test can stop the
// process at each of them and prove that the next run copes. It is a test
// seam and nothing else: no fleetprov code installs a handler (a test in
// this package checks the repository for that), and a vendor's module cannot
// import an internal package, so in every build but a test binary each Hit
// is one atomic load of a nil pointer.
package faultpoint

import (
	"context"
	"sync/atomic"
)

// The points. Each Hit passes a detail with the name: the state for a
// journal record, the path for the others (the file's own path for file.*,
// not its temporary name).
const (
	// A journal record: before its line is written, after it is written
	// and before fsync, after fsync.
	JournalAppend  = "journal.append"
	JournalWritten = "journal.written"
	JournalSynced  = "journal.synced"

	// An atomic file write: the temporary file created (mode set, still
	// empty), written but not synced, synced but not yet renamed, renamed
	// over the file but its directory not yet synced.
	FileCreated = "file.created"
	FileWritten = "file.written"
	FileSynced  = "file.synced"
	FileRenamed = "file.renamed"

	// A secret file deleted for good (atomicfile.RemoveSecret): its
	// content overwritten with zeros and synced, before the unlink; the
	// unlink done, before its directory is synced.
	FileOverwritten = "file.overwritten"
	FileRemoved     = "file.removed"

	// A directory made (before its parent is synced), and any directory
	// fsync once it has returned.
	DirCreated = "dir.created"
	DirSynced  = "dir.synced"

	// A file set aside under a backup name (the journal by reset, reset's
	// moves, the old key of a forced run): before and after the rename.
	RenameBefore = "rename.before"
	RenameAfter  = "rename.after"

	// Reset's plan removed once all of it is done, before its directory is
	// synced.
	ResetPlanRemoved = "reset.plan-removed"

	// A state's entry is journaled and it is about to run. Not a write:
	// a test pauses here to act while the process is inside a state.
	StateEntered = "state.entered"
)

// Handler is told of each point reached. Its error matters only at
// HitContext points, where it stops what the process was about to do.
type Handler func(ctx context.Context, name, detail string) error

var handler atomic.Pointer[Handler]

// Set installs h for the whole process and returns a function that puts
// back the handler before it. For tests only.
func Set(h Handler) (restore func()) {
	var p *Handler
	if h != nil {
		p = &h
	}
	old := handler.Swap(p)
	return func() { handler.Store(old) }
}

// Hit reports that the process reached the point name.
func Hit(name, detail string) {
	if h := handler.Load(); h != nil {
		_ = (*h)(context.Background(), name, detail)
	}
}

// HitContext is Hit at a point where the handler may make the process
// wait; the wait ends with ctx, and the handler's error is returned.
func HitContext(ctx context.Context, name, detail string) error {
	if h := handler.Load(); h != nil {
		return (*h)(ctx, name, detail)
	}
	return nil
}
