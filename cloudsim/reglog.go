package cloudsim

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"sync"

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
// Open folds the log into a new snapshot. Both files carry a generation:
// a log older than its snapshot is already folded in and is ignored; a
// reader that catches a newer log with an older snapshot (a compaction in
// between its two reads) reads again.
const fileRegistryLog = "registry.log"

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

// readLog applies registry.log to r when the log is of r's generation. It
// returns the log's generation (-1 when there is no log) and stops at the
// first torn or corrupt frame: only the tail of an append cut short by a
// crash can be one, and nothing after it was acknowledged.
func readLog(path string, r *Registry) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return -1, nil
		}
		return 0, fmt.Errorf("read registry log: %w", err)
	}
	if !bytes.HasPrefix(b, logMagic) {
		if len(b) < len(logMagic) && bytes.HasPrefix(logMagic, b) {
			return -1, nil // torn in its first write: nothing was logged
		}
		return readJSONLog(path, b, r)
	}
	b = b[len(logMagic):]
	payload, b, ok := nextFrame(b)
	if !ok {
		return -1, nil // torn header: nothing was logged
	}
	var h logHeader
	if err := regDec.Unmarshal(payload, &h); err != nil {
		return 0, fmt.Errorf("%s: not a registry log: %w", path, err)
	}
	if h.Generation != r.Generation {
		return h.Generation, nil
	}
	for n := 1; ; n++ {
		if payload, b, ok = nextFrame(b); !ok {
			return h.Generation, nil
		}
		var rec logRecord
		if err := regDec.Unmarshal(payload, &rec); err != nil {
			return 0, fmt.Errorf("%s: record %d: %w", path, n, err)
		}
		if err := r.applyRecord(rec); err != nil {
			return 0, fmt.Errorf("%s: record %d: %w", path, n, err)
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
	return nil
}

// regLog appends change records to registry.log with group commit.
type regLog struct {
	f *os.File
	// sync makes what was written durable; tests replace it to hold a
	// commit and watch others gather behind it.
	sync func(*os.File) error

	mu      sync.Mutex
	pending []byte       // lines waiting for the next write
	waiters []chan error // one per append in pending
	kick    chan struct{}
	done    chan struct{}
	err     error // the first failed write or sync: every later append fails
	closed  bool

	syncs, appends int64 // for tests and benchmarks
}

func openRegLog(dir string) (*regLog, error) {
	f, err := os.OpenFile(filepath.Join(dir, fileRegistryLog), os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open registry log: %w", err)
	}
	l := &regLog{f: f, sync: (*os.File).Sync, kick: make(chan struct{}, 1), done: make(chan struct{})}
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
	l.pending = append(l.pending, buf...)
	l.waiters = append(l.waiters, ch)
	l.appends++
	select {
	case l.kick <- struct{}{}:
	default:
	}
	return ch
}

// run writes and syncs whatever gathered while the last sync ran.
func (l *regLog) run() {
	defer close(l.done)
	for range l.kick {
		l.mu.Lock()
		buf, waiters := l.pending, l.waiters
		l.pending, l.waiters = nil, nil
		failed := l.err
		l.mu.Unlock()
		if len(waiters) == 0 {
			if l.isClosed() {
				return
			}
			continue
		}
		err := failed
		if err == nil {
			if _, werr := l.f.Write(buf); werr != nil {
				err = fmt.Errorf("append to registry log: %w", werr)
			} else if serr := l.sync(l.f); serr != nil {
				err = fmt.Errorf("sync registry log: %w", serr)
			}
		}
		l.mu.Lock()
		l.syncs++
		if err != nil && l.err == nil {
			l.err = err
		}
		l.mu.Unlock()
		for _, w := range waiters {
			w <- err
		}
		if l.isClosed() {
			l.mu.Lock()
			left := len(l.waiters)
			l.mu.Unlock()
			if left == 0 {
				return
			}
		}
	}
}

func (l *regLog) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
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
	return l.f.Close()
}

// counts reports how many appends and syncs the log has made.
func (l *regLog) counts() (appends, syncs int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.appends, l.syncs
}
