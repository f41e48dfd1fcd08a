package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func appendStates(t *testing.T, path string, states ...string) {
	t.Helper()
	j, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for _, s := range states {
		if err := j.Append(Record{State: s, Time: time.Unix(1700000000, 0), Attempt: 1, Data: Data{ThingName: "t-" + s}}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestJournalRoundTripAndMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j", "journal")
	appendStates(t, path, PrepareKey, CreateCertificate, RegisterThing)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("journal mode %v, want 0600 (it holds the ownership token)", fi.Mode().Perm())
	}
	recs, skipped, err := ReadJournal(path)
	if err != nil || skipped != 0 || len(recs) != 3 {
		t.Fatalf("ReadJournal = %d records, %d skipped, %v", len(recs), skipped, err)
	}
	for i, want := range []string{PrepareKey, CreateCertificate, RegisterThing} {
		if recs[i].State != want || recs[i].Seq != i+1 || recs[i].Data.ThingName != "t-"+want {
			t.Errorf("record %d = %+v", i, recs[i])
		}
	}
}

// A torn last record (power lost mid-append) is ignored, the one before it
// is used, and the next append is not corrupted by the torn bytes.
func TestJournalTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	appendStates(t, path, PrepareKey, CreateCertificate, RegisterThing)
	raw, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(raw), "\n")
	last := lines[len(lines)-2]
	// Every length a torn append can leave, from one byte to all but the
	// newline.
	for cut := 1; cut < len(last); cut++ {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			torn := strings.Join(lines[:len(lines)-2], "") + last[:cut]
			if err := os.WriteFile(path, []byte(torn), 0o600); err != nil {
				t.Fatal(err)
			}
			j, err := OpenJournal(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := j.Last(); got == nil || got.State != CreateCertificate {
				t.Fatalf("last = %+v, want CreateCertificate", got)
			}
			if j.Skipped() != 1 {
				t.Errorf("skipped = %d, want 1", j.Skipped())
			}
			if err := j.Append(Record{State: Persist}); err != nil {
				t.Fatal(err)
			}
			j.Close()
			recs, skipped, _ := ReadJournal(path)
			if skipped != 0 || len(recs) != 3 || recs[2].State != Persist {
				t.Fatalf("after append: %d records, %d skipped", len(recs), skipped)
			}
		})
	}
}

func TestJournalCorruptRecordIgnored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	appendStates(t, path, PrepareKey, CreateCertificate)
	raw, _ := os.ReadFile(path)
	// Flip one byte inside the last record's JSON: the checksum catches it.
	i := strings.LastIndex(string(raw), "t-CreateCertificate")
	raw[i] = 'X'
	os.WriteFile(path, raw, 0o600)
	recs, skipped, err := ReadJournal(path)
	if err != nil || skipped != 1 || len(recs) != 1 || recs[0].State != PrepareKey {
		t.Fatalf("got %d records, %d skipped, %v; want the PrepareKey record only", len(recs), skipped, err)
	}
}

func TestJournalLockedByAnotherRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if _, err := OpenJournal(path); !errors.Is(err, ErrJournalLocked) {
		t.Errorf("second open: err = %v, want ErrJournalLocked", err)
	}
	if _, err := Archive(path, time.Now()); !errors.Is(err, ErrJournalLocked) {
		t.Errorf("archive while locked: err = %v, want ErrJournalLocked", err)
	}
	// Readers never block on the writer.
	if _, _, err := ReadJournal(path); err != nil {
		t.Errorf("read while locked: %v", err)
	}
}

func TestArchive(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "journal")
	appendStates(t, path, PrepareKey, Done)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	dst, err := Archive(path, now)
	if err != nil {
		t.Fatal(err)
	}
	if dst != path+".bak-20260102T030405Z" {
		t.Errorf("backup name %q", dst)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("journal still present after archive")
	}
	recs, _, _ := ReadJournal(dst)
	if len(recs) != 2 {
		t.Errorf("backup holds %d records, want 2", len(recs))
	}
}

func TestBackupNameNeverReusesAName(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "priv_key")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		name := BackupName(path, now)
		if seen[name] {
			t.Fatalf("backup name %s given twice", name)
		}
		seen[name] = true
		os.WriteFile(name, nil, 0o600)
	}
	if !seen[path+".bak-20260102T030405Z"] || !seen[path+".bak-20260102T030405Z.3"] {
		t.Errorf("names %v", seen)
	}
}

// A symbolic link at the journal path is refused, and the file it points
// to keeps its content and mode: the journal is truncated and chmod'ed in
// place, which through a link would change a file that is not ours.
func TestJournalSymlinkTargetUntouched(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious.conf")
	const content = "not a journal\nsecond line\n"
	if err := os.WriteFile(target, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "journal")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	for name, open := range map[string]func() error{
		"OpenJournal": func() error {
			j, err := OpenJournal(path)
			if err == nil {
				j.Close()
			}
			return err
		},
		"ReadJournal": func() error { _, _, err := ReadJournal(path); return err },
		"Archive":     func() error { _, err := Archive(path, time.Now()); return err },
	} {
		err := open()
		if !errors.Is(err, ErrJournalNotRegular) {
			t.Errorf("%s on a symlink: %v, want ErrJournalNotRegular", name, err)
		} else if want := "journal " + path + " is a symbolic link: is not a regular file"; err.Error() != want {
			t.Errorf("%s: %q, want %q", name, err, want)
		}
	}
	b, err := os.ReadFile(target)
	if err != nil || string(b) != content {
		t.Errorf("target now holds %q (%v), want it untouched", b, err)
	}
	fi, err := os.Stat(target)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("target mode %v (%v), want 0644 untouched", fi.Mode().Perm(), err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link itself was replaced or moved: %v", err)
	}
}

// A device or a FIFO at the journal path is refused at once: reading
// /dev/zero as a journal never ends, and opening a FIFO must not wait for
// a writer.
func TestJournalNotRegularRefused(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/dev/zero", "/dev/null", fifo, t.TempDir()} {
		j, err := OpenJournal(path)
		if err == nil {
			j.Close()
		}
		if !errors.Is(err, ErrJournalNotRegular) && !errors.Is(err, syscall.EISDIR) {
			t.Errorf("OpenJournal(%s) = %v, want it refused as not a regular file", path, err)
		}
		if _, _, err := ReadJournal(path); !errors.Is(err, ErrJournalNotRegular) {
			t.Errorf("ReadJournal(%s) = %v, want ErrJournalNotRegular", path, err)
		}
	}
	if _, err := Archive("/dev/null", time.Now()); !errors.Is(err, ErrJournalNotRegular) {
		t.Errorf("Archive(/dev/null) = %v, want it refused, not the device renamed", err)
	}
	if _, err := os.Stat("/dev/null"); err != nil {
		t.Fatalf("/dev/null: %v", err)
	}
}
