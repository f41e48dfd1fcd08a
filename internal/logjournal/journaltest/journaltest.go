// Package journaltest is a stand-in for journald in tests: a unixgram
// socket the test listens on, whose datagrams (and the memory files passed
// with large ones) it decodes as systemd's native protocol, refusing what
// journald refuses.
package journaltest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// drainField marks the datagram Drain sends itself: a unix datagram
// socket keeps order, so once it arrives every entry sent before it has.
const drainField = "JOURNALTEST_DRAIN"

// Journal listens at Path.
type Journal struct {
	Path    string
	conn    *net.UnixConn
	entries chan map[string]string
}

// Listen starts a journal in a temporary directory. It reads while the
// program under test writes: a datagram socket's queue is short, and a
// full one blocks the sender.
func Listen(t testing.TB) *Journal {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.socket")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	j := &Journal{Path: path, conn: conn, entries: make(chan map[string]string, 10000)}
	go j.read()
	t.Cleanup(j.Close)
	return j
}

func (j *Journal) read() {
	defer close(j.entries)
	buf := make([]byte, 1<<20)
	oob := make([]byte, 1024)
	for {
		n, oobn, _, _, err := j.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		e, err := decode(buf[:n], oob[:oobn])
		if err != nil {
			e = map[string]string{"PARSE_ERROR": fmt.Sprintf("%v in %q", err, buf[:n])}
		}
		j.entries <- e
	}
}

// Close stops listening: what is sent afterwards is refused, as when
// journald goes away.
func (j *Journal) Close() { j.conn.Close() }

// Next waits for the next entry. The wait only bounds a stuck test.
func (j *Journal) Next(t testing.TB) map[string]string {
	t.Helper()
	select {
	case e, ok := <-j.entries:
		if !ok {
			t.Fatal("the journal was closed before an entry came")
		}
		check(t, e)
		return e
	case <-time.After(60 * time.Second):
		t.Fatal("no journal entry came")
		return nil
	}
}

// Drain returns every entry sent so far, once the sender is done.
func (j *Journal) Drain(t testing.TB) []map[string]string {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: j.Path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(drainField + "=1\n")); err != nil {
		t.Fatal(err)
	}
	var out []map[string]string
	for {
		e := j.Next(t)
		if e[drainField] != "" {
			return out
		}
		out = append(out, e)
	}
}

func check(t testing.TB, e map[string]string) {
	t.Helper()
	if msg, bad := e["PARSE_ERROR"]; bad {
		t.Fatalf("not an entry journald takes: %s", msg)
	}
}

// decode takes an entry from a datagram, or from the memory file passed
// with it (what a sender does with an entry too large for one).
func decode(data, oob []byte) (map[string]string, error) {
	if len(oob) > 0 {
		msgs, err := syscall.ParseSocketControlMessage(oob)
		if err != nil || len(msgs) != 1 {
			return nil, fmt.Errorf("control message: %v (%d)", err, len(msgs))
		}
		fds, err := syscall.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			return nil, fmt.Errorf("rights: %v (%d)", err, len(fds))
		}
		f := os.NewFile(uintptr(fds[0]), "entry")
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		data = make([]byte, st.Size())
		if _, err := f.ReadAt(data, 0); err != nil {
			return nil, err
		}
	}
	return Parse(data)
}

var validName = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// Parse decodes systemd's native protocol, refusing what journald refuses:
// a field name out of ^[A-Z_][A-Z0-9_]*$ or longer than 64, or a name
// starting with "_" (those are journald's own), and a field given twice.
func Parse(b []byte) (map[string]string, error) {
	fields := map[string]string{}
	for len(b) > 0 {
		nl := strings.IndexByte(string(b), '\n')
		if nl < 0 {
			return nil, errors.New("field without a newline")
		}
		line := string(b[:nl])
		b = b[nl+1:]
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			if len(b) < 8 {
				return nil, fmt.Errorf("field %s: no length", name)
			}
			size := binary.LittleEndian.Uint64(b)
			b = b[8:]
			if uint64(len(b)) < size+1 || b[size] != '\n' {
				return nil, fmt.Errorf("field %s: length %d does not fit", name, size)
			}
			value, b = string(b[:size]), b[size+1:]
		}
		if !validName.MatchString(name) || len(name) > 64 {
			return nil, fmt.Errorf("field name %q is not one journald accepts", name)
		}
		if _, dup := fields[name]; dup {
			return nil, fmt.Errorf("field %s twice", name)
		}
		fields[name] = value
	}
	return fields, nil
}
