package engine

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/fleetprov/fleetprov/atomicfile"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/internal/faultpoint"
)

// The journal is an append-only file of one record per line:
//
//	fp1 <crc32c of the JSON, 8 hex digits> <JSON>\n
//
// Each append is followed by fsync, so once Append returns the record is on
// stable storage. Power lost during an append can leave only the last line
// incomplete (a torn record): its checksum or its newline is missing, so it
// is ignored and the record before it is the state to resume from. The file
// is truncated back to its last whole record before the next append, so a
// torn tail never corrupts the record written after it. Why not bbolt: a
// reader (`fleetprov status` while `run` runs) must not block on the writer's
// lock, and a line log can be read with a text editor on a broken device.

const recordMagic = "fp1"

// RecordFormat is the format of the records this build writes: the fields
// of Record and what they mean. It goes up when a change would make an
// older fleetprov misread a record; an older build then refuses the record
// with a message instead of acting on it.
const RecordFormat = 1

// Version is this fleetprov's version: the one stamped at link time, or
// else as the Go toolchain recorded it (a module version, or "devel" with
// the VCS revision when built from a checkout).
func Version() string {
	versionOnce.Do(func() {
		if stamped != "" {
			version = stamped
			return
		}
		version = "devel"
		bi, ok := debug.ReadBuildInfo()
		if !ok {
			return
		}
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			version = v
			return
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				version = "devel-" + s.Value[:12]
			}
		}
	})
	return version
}

var (
	versionOnce sync.Once
	version     string
	// stamped is set by builds that know their release, such as the
	// package task's: -ldflags "-X github.com/fleetprov/fleetprov/engine.stamped=1.2.0".
	// Without it, a build without version control information
	// (-buildvcs=false, a source tarball) could only say "devel".
	stamped string
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Record is one journaled transition: the state entered, and the data that
// state needs.
type Record struct {
	// Format is the record format, RecordFormat when written; records
	// from before formats were numbered read as format 1.
	Format int `json:"format,omitempty"`
	// Writer is the version of fleetprov that wrote the record, so a
	// record this build cannot use can say which build can.
	Writer string    `json:"writer,omitempty"`
	Seq    int       `json:"seq"`
	State  string    `json:"state"`
	Time   time.Time `json:"time"`
	// Attempt counts how often State has been entered, across runs, without
	// progress to a later state.
	Attempt int    `json:"attempt"`
	Event   string `json:"event,omitempty"`
	// For Failed: the state that failed and why.
	FailedState string `json:"failedState,omitempty"`
	Error       string `json:"error,omitempty"`
	Data        Data   `json:"data"`
}

// Journal is an open journal file, locked for this process.
type Journal struct {
	path    string
	f       *os.File
	records []Record
	skipped int
}

// ErrJournalLocked means another fleetprov run holds the journal.
var ErrJournalLocked = errors.New("journal is in use by another fleetprov process")

// OpenJournal opens (creating if needed) the journal at path for appending,
// takes an exclusive lock on it, reads its whole records, and cuts off a torn
// tail.
func OpenJournal(path string) (*Journal, error) {
	if err := atomicfile.MkdirAll(filepath.Dir(path), 0o700, nil); err != nil {
		return nil, fmt.Errorf("journal %s: %w", path, err)
	}
	f, err := openJournalFile(path, os.O_RDWR|os.O_CREATE)
	if err != nil {
		return nil, err
	}
	// Make the file's directory entry durable before relying on it: every
	// time, as a run killed between creating the file and this fsync leaves
	// a journal whose entry may still be only in memory.
	if err := atomicfile.SyncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, ErrJournalLocked)
		}
		return nil, fmt.Errorf("lock journal %s: %w", path, err)
	}
	// The journal holds the ownership token: keep it private even if it was
	// created by an older version or by hand.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("journal %s: %w", path, err)
	}
	recs, good, skipped, err := readRecords(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read journal %s: %w", path, err)
	}
	if err := truncateTo(f, good); err != nil {
		f.Close()
		return nil, fmt.Errorf("repair journal %s: %w", path, err)
	}
	return &Journal{path: path, f: f, records: recs, skipped: skipped}, nil
}

// ErrJournalNotRegular means the journal path names something other than
// a regular file: a symbolic link, a device, a directory.
var ErrJournalNotRegular = errors.New("is not a regular file")

// openJournalFile opens the journal without following a symbolic link at
// its path and refuses anything but a regular file: the journal is
// truncated, chmod'ed and appended to in place, which through a link would
// change a file that is not ours, and reading a device such as /dev/zero
// never ends. Config refuses such a path first; this holds even when the
// path changes after that check.
func openJournalFile(path string, flag int) (*os.File, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer; it is
	// refused below. It changes nothing for a regular file.
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("journal %s is a symbolic link: %w", path, ErrJournalNotRegular)
	}
	if errors.Is(err, fs.ErrPermission) {
		// The user's to fix, like a config file it may not read: exit 2.
		return nil, &failure.UsageError{Msg: fmt.Sprintf("journal %s cannot be opened (permission denied): run as a user that can read and write it", path), Err: err}
	}
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("journal %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("journal %s (%s): %w", path, fi.Mode().Type(), ErrJournalNotRegular)
	}
	return f, nil
}

func truncateTo(f *os.File, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != size {
		if err := f.Truncate(size); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
	}
	_, err = f.Seek(size, io.SeekStart)
	return err
}

// ReadJournal reads the whole records of the journal at path without
// locking it, for status while a run may be appending. A missing journal
// gives no records and no error.
func ReadJournal(path string) (records []Record, skipped int, err error) {
	f, err := openJournalFile(path, os.O_RDONLY)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	recs, _, skipped, err := readRecords(f)
	if err != nil {
		return nil, 0, fmt.Errorf("read journal %s: %w", path, err)
	}
	return recs, skipped, nil
}

// readRecords returns the valid records, the offset just past the last one,
// and how many lines were skipped as torn or corrupt.
func readRecords(r io.Reader) (recs []Record, good int64, skipped int, err error) {
	br := bufio.NewReader(r)
	var off int64
	for {
		line, rerr := br.ReadBytes('\n')
		off += int64(len(line))
		if len(line) > 0 {
			if rec, ok := decodeRecord(line); ok {
				recs = append(recs, rec)
				good = off
			} else {
				skipped++
			}
		}
		if rerr == io.EOF {
			return recs, good, skipped, nil
		}
		if rerr != nil {
			return nil, 0, 0, rerr
		}
	}
}

func decodeRecord(line []byte) (Record, bool) {
	var rec Record
	if !bytes.HasSuffix(line, []byte("\n")) {
		return rec, false // torn: the append never finished
	}
	fields := bytes.SplitN(bytes.TrimSuffix(line, []byte("\n")), []byte(" "), 3)
	if len(fields) != 3 || string(fields[0]) != recordMagic {
		return rec, false
	}
	sum, err := strconv.ParseUint(string(fields[1]), 16, 32)
	if err != nil || uint32(sum) != crc32.Checksum(fields[2], crcTable) {
		return rec, false
	}
	// A state this build does not know (a vendor build's own, say) is not
	// corruption: the checksum says the record is whole. Resume refuses
	// it with a message instead of cutting it off as torn.
	if err := json.Unmarshal(fields[2], &rec); err != nil || rec.State == "" {
		return rec, false
	}
	return rec, true
}

func encodeRecord(rec Record) ([]byte, error) {
	body, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "%s %08x %s\n", recordMagic, crc32.Checksum(body, crcTable), body), nil
}

// Records returns the whole records read when the journal was opened plus
// those appended since.
func (j *Journal) Records() []Record { return j.records }

// Skipped is how many torn or corrupt lines were ignored when opening.
func (j *Journal) Skipped() int { return j.skipped }

// Last returns the newest record, or nil if the journal is empty.
func (j *Journal) Last() *Record {
	if len(j.records) == 0 {
		return nil
	}
	r := j.records[len(j.records)-1]
	return &r
}

// Path is the journal file's path.
func (j *Journal) Path() string { return j.path }

// Append writes rec durably: it returns only after fsync.
func (j *Journal) Append(rec Record) error {
	rec.Format, rec.Writer = RecordFormat, Version()
	rec.Seq = 1
	if last := j.Last(); last != nil {
		rec.Seq = last.Seq + 1
	}
	line, err := encodeRecord(rec)
	if err != nil {
		return fmt.Errorf("journal %s: %w", j.path, err)
	}
	faultpoint.Hit(faultpoint.JournalAppend, rec.State)
	if _, err := j.f.Write(line); err != nil {
		return fmt.Errorf("append to journal %s: %w", j.path, err)
	}
	faultpoint.Hit(faultpoint.JournalWritten, rec.State)
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("sync journal %s: %w", j.path, err)
	}
	faultpoint.Hit(faultpoint.JournalSynced, rec.State)
	j.records = append(j.records, rec)
	return nil
}

// Close releases the lock and the file.
func (j *Journal) Close() error { return j.f.Close() }

// Archive moves the journal at path aside as path.bak-<UTC time>, so the
// next run starts afresh while the history is kept. It fails if a run holds
// the journal. A missing journal is not an error; it returns "" then.
func Archive(path string, now time.Time) (string, error) {
	f, err := openJournalFile(path, os.O_RDWR)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return "", fmt.Errorf("%s: %w", path, ErrJournalLocked)
	}
	dst := BackupName(path, now)
	faultpoint.Hit(faultpoint.RenameBefore, path)
	if err := os.Rename(path, dst); err != nil {
		return "", fmt.Errorf("archive journal %s: %w", path, err)
	}
	faultpoint.Hit(faultpoint.RenameAfter, path)
	return dst, atomicfile.SyncDir(filepath.Dir(path))
}

// BackupName is a free name to move path to when it is kept as a backup:
// path.bak-<UTC time>, or with .2, .3, ... appended when that is taken, so
// two backups in the same second (or on a device whose clock restarts at the
// same time every boot) never overwrite each other.
func BackupName(path string, now time.Time) string {
	base := path + ".bak-" + now.UTC().Format("20060102T150405Z")
	name := base
	for i := 2; ; i++ {
		if _, err := os.Lstat(name); err != nil {
			return name // free, or unusable: the rename will say why
		}
		name = fmt.Sprintf("%s.%d", base, i)
	}
}
