package engine

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/atomicfile/atomicfiletest"
)

// A journal in directories that do not exist yet: each new directory's
// parent and the journal's own directory are fsynced, or a power cut could
// take the journal, and every record in it, away.
func TestOpenJournalSyncsNewDirectories(t *testing.T) {
	syncs := atomicfiletest.Record(t)
	root := t.TempDir()
	gg := filepath.Join(root, "greengrass")
	dir := filepath.Join(gg, "fleetprov")
	j, err := OpenJournal(filepath.Join(dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	for _, d := range []string{root, gg, dir} {
		if n := syncs.Count(d); n != 1 {
			t.Errorf("%s fsynced %d times, want once", d, n)
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("journal directory mode %v, want 0700", fi.Mode().Perm())
	}
}

// A run killed after creating the journal but before fsyncing its
// directory leaves a file whose entry may not be on disk: the next run
// fsyncs the directory although the file is already there.
func TestOpenJournalSyncsLeftFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "journal")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	syncs := atomicfiletest.Record(t)
	j, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	if n := syncs.Count(dir); n != 1 {
		t.Errorf("%s fsynced %d times on opening an existing journal, want once", dir, n)
	}
}

func TestArchiveSyncsDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "journal")
	appendStates(t, path, PrepareKey, Done)
	syncs := atomicfiletest.Record(t)
	if _, err := Archive(path, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	if n := syncs.Count(dir); n != 1 {
		t.Errorf("%s fsynced %d times after the journal was moved aside, want once", dir, n)
	}
}
