package cloudsim

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/fleetprov/fleetprov/atomicfile"
)

// The registry is kept as a snapshot (registry.cbor) and a log of changes
// since (registry.log). A change appends one record per thing, certificate,
// token or policy it touched, holding that entity's new value (or its
// deletion); nothing is ever re-serialised whole while the emulator runs.
// Appends are group-committed: one write and one fsync cover every change
// that arrived while the previous fsync ran, so many devices provisioning
// at once share the disk's latency instead of queueing on it.
//
// Both files are CBOR, not JSON: a restart reads them whole, and at fleet
// scale (10,000 devices: a 14 MB snapshot, a log twice that after a run)
// decoding JSON took seconds where CBOR takes a tenth of the time.
//
// A clean stop folds the log into a new snapshot, and so does serve in the
// background once the log outgrows the snapshot (compactLive), so that the
// log a crash leaves stays in proportion to the registry; a start after a
// crash appends to the log it finds. Both files carry
// a generation: a log older than its snapshot is already folded in and is
// ignored; a reader that catches a newer log with an older snapshot (a
// compaction in between its reads) reads again.
const (
	fileRegistryLog     = "registry.log"
	fileRegistryLogPrev = "registry.log.prev" // the log a compaction in progress rotated out
	fileRegistryLogNext = "registry.log.next" // the log a compaction is about to rotate in
)

// logMagic opens a registry log; frames follow, each a big-endian uint32
// length, a big-endian uint32 CRC-32C of the payload, and the payload (a
// CBOR logHeader first, then one logRecord each). A log without the magic
// is of the earlier format, checksummed JSON lines, still read so that a
// directory an older version left after a crash loses nothing.
var logMagic = []byte("fleetprov registry log 2\n")

// maxFrame bounds a frame's length: a larger one can only be a corrupt
// length field, read as the end of the log rather than allocated.
const maxFrame = 16 << 20

// Entity kinds in the log.
const (
	kindThing  = "thing"
	kindCert   = "cert"
	kindToken  = "token"
	kindPolicy = "policy"
)

// logRecord is one entity's new value: the field of its kind is set, or
// none is for a deletion.
type logRecord struct {
	Kind   string          `cbor:"t"`
	Key    string          `cbor:"k"`
	Thing  *Thing          `cbor:"th,omitempty"`
	Cert   *Certificate    `cbor:"c,omitempty"`
	Token  *Token          `cbor:"tk,omitempty"`
	Policy json.RawMessage `cbor:"p,omitempty"`
}

// logHeader is the first frame of registry.log.
type logHeader struct {
	Generation int64 `cbor:"registryLog" json:"registryLog"`
}

// regEnc writes times with their nanoseconds and zone, as the JSON
// registry did (the default, Unix seconds, would round CreatedAt).
var regEnc = func() cbor.EncMode {
	em, err := cbor.EncOptions{Time: cbor.TimeRFC3339Nano}.EncMode()
	if err != nil {
		panic(err) // constant options
	}
	return em
}()

// regDec reads what regEnc wrote. The registry's maps hold one entry per
// device, far beyond the decoder's default limit of 131,072 pairs, which
// guards against hostile input the emulator's own files are not.
var regDec = func() cbor.DecMode {
	dm, err := cbor.DecOptions{MaxMapPairs: math.MaxInt32, MaxArrayElements: math.MaxInt32}.DecMode()
	if err != nil {
		panic(err) // constant options
	}
	return dm
}()

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendFrame appends payload to buf as a frame.
func appendFrame(buf, payload []byte) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(payload)))
	buf = binary.BigEndian.AppendUint32(buf, crc32.Checksum(payload, castagnoli))
	return append(buf, payload...)
}

// nextFrame splits the first frame off b; ok is false for a torn or
// corrupt frame, or none.
func nextFrame(b []byte) (payload, rest []byte, ok bool) {
	if len(b) < 8 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if n > maxFrame || uint64(len(b)-8) < uint64(n) {
		return nil, nil, false
	}
	payload = b[8 : 8+n]
	if binary.BigEndian.Uint32(b[4:]) != crc32.Checksum(payload, castagnoli) {
		return nil, nil, false
	}
	return payload, b[8+n:], true
}

// readLogs applies to r, read from its snapshot, the logs of changes
// since: registry.log, and during a compaction the log it rotated out,
// registry.log.prev, which holds the changes between the snapshot and the
// rotation (registry.log then holds those after, and is of the next
// generation). again is true when a compaction moved the files while they
// were read: the caller reads again.
func readLogs(dir string, r *Registry) (again bool, err error) {
	snapGen := r.Generation
	want := snapGen // the generation registry.log must have
	prevPath := filepath.Join(dir, fileRegistryLogPrev)
	prev, err := readIfExists(prevPath)
	if err != nil {
		return false, err
	}
	if prev != nil {
		gen, _, err := applyLog(prevPath, prev, r, snapGen)
		if err != nil {
			return false, err
		}
		switch {
		case gen == snapGen:
			want = snapGen + 1
		case gen > snapGen:
			return true, nil
		}
		// Older: left by a compaction that completed; the snapshot holds it.
	}
	logPath := filepath.Join(dir, fileRegistryLog)
	b, err := readIfExists(logPath)
	if err != nil {
		return false, err
	}
	gen, end := int64(-1), -1
	if b != nil {
		if gen, end, err = applyLog(logPath, b, r, want); err != nil {
			return false, err
		}
	}
	if want > snapGen {
		// Changes queued before the rotation may have been written to
		// the old log after it was read here.
		if fi, err := os.Stat(prevPath); err != nil || fi.Size() != int64(len(prev)) {
			return true, nil
		}
	}
	switch {
	case gen > want:
		return true, nil // a compaction in between the reads
	case gen == want:
		r.Generation = want
		if want == snapGen {
			r.logEnd = int64(end)
		}
	}
	// Older, or none: the snapshot already holds it (a start that crashed
	// between writing the snapshot and the new log).
	return false, nil
}

func readIfExists(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read registry log: %w", err)
	}
	return b, nil
}

// applyLog applies the log b, read from path, to r when the log is of
// generation gen. It returns the log's generation (-1 when its header is
// torn) and the length of b up to its last whole record (-1 for a log of
// the earlier format), and stops at the first torn or corrupt frame: only
// the tail of an append cut short by a crash can be one, and nothing after
// it was acknowledged.
func applyLog(path string, b []byte, r *Registry, gen int64) (int64, int, error) {
	if !bytes.HasPrefix(b, logMagic) {
		if len(b) < len(logMagic) && bytes.HasPrefix(logMagic, b) {
			return -1, -1, nil // torn in its first write: nothing was logged
		}
		g, err := readJSONLog(path, b, r, gen)
		return g, -1, err
	}
	all := len(b)
	b = b[len(logMagic):]
	payload, b, ok := nextFrame(b)
	if !ok {
		return -1, -1, nil // torn header: nothing was logged
	}
	var h logHeader
	if err := regDec.Unmarshal(payload, &h); err != nil {
		return 0, -1, fmt.Errorf("%s: not a registry log: %w", path, err)
	}
	if h.Generation != gen {
		return h.Generation, -1, nil
	}
	for n := 1; ; n++ {
		end := all - len(b)
		if payload, b, ok = nextFrame(b); !ok {
			return h.Generation, end, nil
		}
		var rec logRecord
		if err := regDec.Unmarshal(payload, &rec); err != nil {
			return 0, -1, fmt.Errorf("%s: record %d: %w", path, n, err)
		}
		if err := r.applyRecord(rec); err != nil {
			return 0, -1, fmt.Errorf("%s: record %d: %w", path, n, err)
		}
		r.logRecords++
	}
}

// applyRecord puts one logged entity into r.
func (r *Registry) applyRecord(rec logRecord) error {
	switch rec.Kind {
	case kindThing:
		if rec.Thing == nil {
			delete(r.Things, rec.Key)
		} else {
			r.Things[rec.Key] = rec.Thing
		}
	case kindCert:
		if rec.Cert == nil {
			delete(r.Certificates, rec.Key)
		} else {
			r.Certificates[rec.Key] = rec.Cert
		}
	case kindToken:
		if rec.Token == nil {
			delete(r.Tokens, rec.Key)
		} else {
			r.Tokens[rec.Key] = rec.Token
		}
	case kindPolicy:
		if len(rec.Policy) == 0 {
			delete(r.Policies, rec.Key)
		} else {
			r.Policies[rec.Key] = rec.Policy
		}
	default:
		return fmt.Errorf("unknown kind %q", rec.Kind)
	}
	return nil
}

// newLog is the content of an empty log of generation gen.
func newLog(gen int64) ([]byte, error) {
	h, err := regEnc.Marshal(logHeader{Generation: gen})
	if err != nil {
		return nil, err
	}
	return appendFrame(append([]byte(nil), logMagic...), h), nil
}

// compact writes r as the snapshot of a new generation, then starts an
// empty log of that generation. A crash between the two leaves the new
// snapshot with the old log, which it already holds.
func compact(dir string, r *Registry) error {
	r.Generation++
	if err := writeSnapshot(dir, r); err != nil {
		return err
	}
	b, err := newLog(r.Generation)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, fileRegistryLog), b, 0o600); err != nil {
		return fmt.Errorf("start registry log: %w", err)
	}
	// Left by a background compaction cut short: the snapshot holds them.
	for _, f := range []string{fileRegistryLogPrev, fileRegistryLogNext} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove an old registry log: %w", err)
		}
	}
	return nil
}

// rotateLog starts the log of generation gen as registry.log, the current
// one becoming registry.log.prev, and returns it open for appending. Both
// renames are durable when it returns, before anything is appended to the
// new log: a crash at any point leaves logs a reader puts together.
func rotateLog(dir string, gen int64) (*os.File, error) {
	b, err := newLog(gen)
	if err != nil {
		return nil, err
	}
	next := filepath.Join(dir, fileRegistryLogNext)
	f, err := os.OpenFile(next, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start registry log: %w", err)
	}
	fail := func(err error) (*os.File, error) {
		_ = f.Close()
		return nil, fmt.Errorf("rotate registry log: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(filepath.Join(dir, fileRegistryLog), filepath.Join(dir, fileRegistryLogPrev)); err != nil {
		return fail(err)
	}
	if err := os.Rename(next, filepath.Join(dir, fileRegistryLog)); err != nil {
		return fail(err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return fail(err)
	}
	return f, nil
}

// regLog appends change records to registry.log with group commit. It
// can be pointed at a new file (rotate) while serving: what was queued
// before goes to the old file, what comes after to the new one, in order.
type regLog struct {
	f *os.File // where appends go
	// sync makes what was written durable; tests replace it to hold a
	// commit and watch others gather behind it.
	sync func(*os.File) error
	// gather is how long a round waits for more appends before it writes,
	// when the round before carried more than one (requests are arriving
	// together): see commitGather. pause does the waiting; tests replace
	// it.
	gather time.Duration
	pause  func(time.Duration)

	mu      sync.Mutex
	pending []*segment // waiting for the next write, oldest first
	retired []*os.File // rotated out; closed once written
	kick    chan struct{}
	done    chan struct{}
	err     error // the first failed write or sync: every later append fails
	closed  bool
	size    int64 // bytes appended to f since it became the log

	syncs, appends int64 // for tests and benchmarks
}

// segment is what is queued for one file.
type segment struct {
	f       *os.File
	buf     []byte
	waiters []chan error // one per append in buf
}

// openRegLog opens registry.log for appending. With end >= 0 it first cuts
// the file to end, the length of its whole records: appends after a torn
// tail would be read as more of it, and ignored.
func openRegLog(dir string, end int64) (*regLog, error) {
	f, err := os.OpenFile(filepath.Join(dir, fileRegistryLog), os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open registry log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("open registry log: %w", err)
	}
	size := fi.Size()
	if end >= 0 && size > end {
		if err := f.Truncate(end); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("cut the torn tail of the registry log: %w", err)
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("cut the torn tail of the registry log: %w", err)
		}
		size = end
	}
	l := &regLog{f: f, sync: (*os.File).Sync, gather: commitGather, pause: time.Sleep,
		kick: make(chan struct{}, 1), done: make(chan struct{}), size: size}
	go l.run()
	return l, nil
}

// append queues recs, in the order calls are made, and returns a channel
// that yields nil once they are durable, or the error that stopped them.
func (l *regLog) append(recs []logRecord) <-chan error {
	ch := make(chan error, 1)
	var buf []byte
	for _, rec := range recs {
		b, err := regEnc.Marshal(rec)
		if err != nil {
			ch <- fmt.Errorf("encode registry change: %w", err)
			return ch
		}
		buf = appendFrame(buf, b)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.err != nil:
		ch <- l.err
		return ch
	case l.closed:
		ch <- errors.New("registry log closed")
		return ch
	}
	if n := len(l.pending); n == 0 || l.pending[n-1].f != l.f {
		l.pending = append(l.pending, &segment{f: l.f})
	}
	seg := l.pending[len(l.pending)-1]
	seg.buf = append(seg.buf, buf...)
	seg.waiters = append(seg.waiters, ch)
	l.appends++
	l.size += int64(len(buf))
	select {
	case l.kick <- struct{}{}:
	default:
	}
	return ch
}

// rotate sends the appends made from now on to f, an open, empty log whose
// name is already durable. The file it replaces is closed once what was
// queued for it is written.
func (l *regLog) rotate(f *os.File) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.retired = append(l.retired, l.f)
	l.f = f
	l.size = 0
}

// bytes is how much was appended to the current file.
func (l *regLog) bytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size
}

// commitGather is how long a commit waits for company once commits are
// seen to arrive together. An fsync costs serve about 0.3 ms of CPU
// whatever it covers; under a fleet's load a round carried two or three
// changes, and a provisioning paid for most of an fsync of its own. Two
// milliseconds more per change (against the hundreds a device waits for
// its turn at the CPU under such load) halve the fsyncs; a change that
// comes alone is written at once.
const commitGather = 2 * time.Millisecond

// run writes and syncs whatever gathered while the last sync ran, file by
// file in the order queued: a change in a newer file is never durable
// before one in an older.
func (l *regLog) run() {
	defer close(l.done)
	last := 0 // appends the previous round carried
	for range l.kick {
		if last > 1 && l.gather > 0 {
			l.pause(l.gather)
		}
		l.mu.Lock()
		segs := l.pending
		l.pending = nil
		failed := l.err
		l.mu.Unlock()
		last = 0
		for _, seg := range segs {
			last += len(seg.waiters)
		}
		for _, seg := range segs {
			err := failed
			if err == nil {
				if _, werr := seg.f.Write(seg.buf); werr != nil {
					err = fmt.Errorf("append to registry log: %w", werr)
				} else if serr := l.sync(seg.f); serr != nil {
					err = fmt.Errorf("sync registry log: %w", serr)
				}
			}
			l.mu.Lock()
			l.syncs++
			if err != nil && l.err == nil {
				l.err = err
			}
			failed = l.err
			l.mu.Unlock()
			for _, w := range seg.waiters {
				w <- err
			}
		}
		l.mu.Lock()
		// A retired file gets no new appends, but may still have some
		// queued since this round began: close only the others.
		var done []*os.File
		l.retired = slices.DeleteFunc(l.retired, func(f *os.File) bool {
			if slices.ContainsFunc(l.pending, func(seg *segment) bool { return seg.f == f }) {
				return false
			}
			done = append(done, f)
			return true
		})
		closed, left := l.closed, len(l.pending)
		l.mu.Unlock()
		for _, f := range done {
			_ = f.Close()
		}
		if closed && left == 0 {
			return
		}
	}
}

// close writes what is queued, then closes the file.
func (l *regLog) close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	<-l.done
	for _, f := range l.retired {
		_ = f.Close()
	}
	return l.f.Close()
}

// counts reports how many appends and syncs the log has made.
func (l *regLog) counts() (appends, syncs int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.appends, l.syncs
}

// minCompactAt is the least log size that starts a background compaction:
// below it, replaying the log at start costs a few tens of milliseconds.
const minCompactAt = 8 << 20

// maybeCompactLocked starts a background compaction when the log has
// outgrown the snapshot. s.mu must be held.
func (s *Server) maybeCompactLocked() {
	if s.compacting || s.compactOff {
		return
	}
	at := s.compactAt
	if at <= 0 {
		at = max(s.snapSize, minCompactAt)
	}
	if s.regLog.bytes() < at {
		return
	}
	s.compacting = true
	s.compactWG.Add(1)
	go func() {
		defer s.compactWG.Done()
		err := s.compactLive()
		s.mu.Lock()
		defer s.mu.Unlock()
		s.compacting = false
		if err != nil {
			s.compactOff = true
			s.log.Error("registry compaction failed: the log grows until serve stops, which folds it", "error", err)
		}
	}()
}

// compactLive folds the log into a new snapshot while the emulator serves.
// The log is rotated first: changes from then on go to a log of the next
// generation, and the snapshot is the registry at the moment of rotation,
// written without the lock (entities in the registry are never modified,
// so a copy of its maps is a consistent view). A crash at any point leaves
// files a start reads back whole: the old snapshot with both logs, or the
// new one with the new log.
func (s *Server) compactLive() error {
	s.mu.RLock()
	gen := s.reg.Generation + 1
	s.mu.RUnlock()
	f, err := rotateLog(s.dir, gen)
	if err != nil {
		return err
	}
	s.mu.Lock()
	snap := &Registry{
		Generation:   gen,
		Things:       maps.Clone(s.reg.Things),
		Certificates: maps.Clone(s.reg.Certificates),
		Tokens:       maps.Clone(s.reg.Tokens),
		Policies:     maps.Clone(s.reg.Policies),
	}
	s.reg.Generation = gen
	s.regLog.rotate(f)
	hook := s.afterRotate
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	if err := writeSnapshot(s.dir, snap); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(s.dir, fileRegistryLogPrev)); err != nil {
		return fmt.Errorf("remove the folded registry log: %w", err)
	}
	if fi, err := os.Stat(filepath.Join(s.dir, fileRegistry)); err == nil {
		s.mu.Lock()
		s.snapSize = fi.Size()
		s.mu.Unlock()
	}
	s.compactions.Add(1)
	return nil
}
