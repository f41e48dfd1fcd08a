package cloudsim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/fleetprov/fleetprov/atomicfile"
)

// The registry is kept as a snapshot (registry.json) and a log of changes
// since (registry.log). A change appends one line per thing, certificate,
// token or policy it touched, holding that entity's new value (or its
// deletion); nothing is ever re-serialised whole while the emulator runs.
// Appends are group-committed: one write and one fsync cover every change
// that arrived while the previous fsync ran, so many devices provisioning
// at once share the disk's latency instead of queueing on it.
//
// Open folds the log into a new snapshot. Both files carry a generation:
// a log older than its snapshot is already folded in and is ignored; a
// reader that catches a newer log with an older snapshot (a compaction in
// between its two reads) reads again.
const fileRegistryLog = "registry.log"

// Entity kinds in the log.
const (
	kindThing  = "thing"
	kindCert   = "cert"
	kindToken  = "token"
	kindPolicy = "policy"
)

// logRecord is one line of registry.log after its checksum. V is null for
// a deletion.
type logRecord struct {
	Kind string          `json:"t"`
	Key  string          `json:"k"`
	V    json.RawMessage `json:"v"`
}

// logHeader is the first line of registry.log.
type logHeader struct {
	Generation int64 `json:"registryLog"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeLine frames b as "<crc32c hex> <b>\n".
func encodeLine(b []byte) []byte {
	line := make([]byte, 0, len(b)+10)
	line = strconv.AppendUint(line, uint64(crc32.Checksum(b, castagnoli)), 16)
	line = append(line, ' ')
	line = append(line, b...)
	return append(line, '\n')
}

// decodeLine undoes encodeLine; ok is false for a torn or corrupt line.
func decodeLine(line []byte) ([]byte, bool) {
	sum, body, found := bytes.Cut(line, []byte{' '})
	if !found {
		return nil, false
	}
	want, err := strconv.ParseUint(string(sum), 16, 32)
	if err != nil || uint32(want) != crc32.Checksum(body, castagnoli) {
		return nil, false
	}
	return body, true
}

// readLog applies registry.log to r when the log is of r's generation. It
// returns the log's generation (-1 when there is no log) and stops at the
// first torn or corrupt line: only the tail of an append cut short by a
// crash can be one, and nothing after it was acknowledged.
func readLog(path string, r *Registry) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return -1, nil
		}
		return 0, fmt.Errorf("read registry log: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	gen := int64(-1)
	for n := 0; ; n++ {
		line, err := br.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return gen, nil // a last line without its newline is torn
		}
		if err != nil {
			return 0, fmt.Errorf("read registry log: %w", err)
		}
		body, ok := decodeLine(line[:len(line)-1])
		if !ok {
			return gen, nil
		}
		if n == 0 {
			var h logHeader
			if json.Unmarshal(body, &h) != nil {
				return 0, fmt.Errorf("%s: not a registry log", path)
			}
			gen = h.Generation
			if gen != r.Generation {
				return gen, nil
			}
			continue
		}
		var rec logRecord
		if err := json.Unmarshal(body, &rec); err != nil {
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
	del := len(rec.V) == 0 || string(rec.V) == "null"
	switch rec.Kind {
	case kindThing:
		if del {
			delete(r.Things, rec.Key)
			return nil
		}
		var t Thing
		if err := json.Unmarshal(rec.V, &t); err != nil {
			return err
		}
		r.Things[rec.Key] = &t
	case kindCert:
		if del {
			delete(r.Certificates, rec.Key)
			return nil
		}
		var c Certificate
		if err := json.Unmarshal(rec.V, &c); err != nil {
			return err
		}
		r.Certificates[rec.Key] = &c
	case kindToken:
		if del {
			delete(r.Tokens, rec.Key)
			return nil
		}
		var t Token
		if err := json.Unmarshal(rec.V, &t); err != nil {
			return err
		}
		r.Tokens[rec.Key] = &t
	case kindPolicy:
		if del {
			delete(r.Policies, rec.Key)
			return nil
		}
		r.Policies[rec.Key] = append(json.RawMessage(nil), rec.V...)
	default:
		return fmt.Errorf("unknown kind %q", rec.Kind)
	}
	return nil
}

// compact writes r as the snapshot of a new generation, then starts an
// empty log of that generation. A crash between the two leaves the new
// snapshot with the old log, which it already holds.
func compact(dir string, r *Registry) error {
	r.Generation++
	if err := writeSnapshot(dir, r); err != nil {
		return err
	}
	h, err := json.Marshal(logHeader{Generation: r.Generation})
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, fileRegistryLog), encodeLine(h), 0o600); err != nil {
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
		b, err := json.Marshal(rec)
		if err != nil {
			ch <- fmt.Errorf("encode registry change: %w", err)
			return ch
		}
		buf = append(buf, encodeLine(b)...)
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
