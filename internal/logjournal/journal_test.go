package logjournal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// journald listens on a unixgram socket; the test listens on its own and
// reads what the handler sends, as journald would.
func listen(t *testing.T) (string, *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "socket")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return path, conn
}

// receive reads one entry, from a datagram or from the memory file passed
// with it, and parses the native protocol.
func receive(t *testing.T, conn *net.UnixConn) map[string]string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(60 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	oob := make([]byte, 1024)
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	data := buf[:n]
	if oobn > 0 {
		msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			t.Fatalf("control message: %v (%d)", err, len(msgs))
		}
		fds, err := syscall.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			t.Fatalf("rights: %v (%d)", err, len(fds))
		}
		f := os.NewFile(uintptr(fds[0]), "entry")
		defer f.Close()
		if _, err := f.Seek(0, 0); err != nil {
			t.Fatal(err)
		}
		if data, err = readAll(f); err != nil {
			t.Fatal(err)
		}
	}
	fields, err := parse(data)
	if err != nil {
		t.Fatalf("%v in %q", err, data)
	}
	return fields
}

func readAll(f *os.File) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, st.Size())
	_, err = f.ReadAt(b, 0)
	return b, err
}

var validName = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// parse decodes systemd's native protocol, refusing what journald refuses:
// a field name out of ^[A-Z_][A-Z0-9_]*$, or a name starting with "_".
func parse(b []byte) (map[string]string, error) {
	fields := map[string]string{}
	for len(b) > 0 {
		nl := strings.IndexByte(string(b), '\n')
		if nl < 0 {
			return nil, errors.New("field without a newline")
		}
		line := string(b[:nl])
		var name, value string
		if eq := strings.IndexByte(line, '='); eq >= 0 {
			name, value = line[:eq], line[eq+1:]
			b = b[nl+1:]
		} else {
			name = line
			b = b[nl+1:]
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

func TestHandlerSendsNativeEntries(t *testing.T) {
	path, conn := listen(t)
	h, err := New(path, Options{Level: slog.LevelDebug, Identifier: "fleetprov"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lg := slog.New(h)

	for _, tc := range []struct {
		level    slog.Level
		priority string
	}{{slog.LevelDebug, "7"}, {slog.LevelInfo, "6"}, {slog.LevelWarn, "4"}, {slog.LevelError, "3"}} {
		lg.Log(t.Context(), tc.level, "state done", "state", "CreateCertificate", "certificateId", "ab12", "duration", 1500*time.Millisecond)
		got := receive(t, conn)
		want := map[string]string{"MESSAGE": "state done", "PRIORITY": tc.priority, "SYSLOG_IDENTIFIER": "fleetprov",
			"STATE": "CreateCertificate", "CERTIFICATE_ID": "ab12", "DURATION": "1.5s"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%v record: got %v, want %v", tc.level, got, want)
		}
	}

	// Attributes of With and groups, an error, a value over several lines.
	lg.With("thing", "gg_1").WithGroup("hook").Error("hook failed", "name", "gate", "err", errors.New("exit status 3"), "stderr", "line one\nline two")
	got := receive(t, conn)
	want := map[string]string{"MESSAGE": "hook failed", "PRIORITY": "3", "SYSLOG_IDENTIFIER": "fleetprov",
		"THING": "gg_1", "HOOK_NAME": "gate", "HOOK_ERR": "exit status 3", "HOOK_STDERR": "line one\nline two"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestHandlerLevel(t *testing.T) {
	path, conn := listen(t)
	h, err := New(path, Options{Level: slog.LevelWarn})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lg := slog.New(h)
	lg.Info("below the level")
	lg.Warn("at the level")
	if got := receive(t, conn)["MESSAGE"]; got != "at the level" {
		t.Errorf("first entry = %q: a record below the level was sent", got)
	}
}

// An entry larger than a datagram may be reaches the journal through a
// sealed memory file, whole.
func TestHandlerLargeEntry(t *testing.T) {
	path, conn := listen(t)
	h, err := New(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	big := strings.Repeat("x", 600<<10)
	slog.New(h).Info("big", "blob", big)
	got := receive(t, conn)
	if got["MESSAGE"] != "big" || got["BLOB"] != big {
		t.Errorf("large entry: MESSAGE %q, BLOB of %d bytes, want %d", got["MESSAGE"], len(got["BLOB"]), len(big))
	}
}

func TestNewWithoutSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "socket")
	_, err := New(path, Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "journal socket "+path+": ") || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("New on a missing socket: %v", err)
	}
}

func TestFieldName(t *testing.T) {
	for key, want := range map[string]string{
		"state":         "STATE",
		"certificateId": "CERTIFICATE_ID",
		"retryIn":       "RETRY_IN",
		"next to":       "NEXT_TO",
		"key-uri":       "KEY_URI",
		"_private":      "PRIVATE",
		"9lives":        "ATTR_9LIVES",
		"message":       "ATTR_MESSAGE",
		"priority":      "ATTR_PRIORITY",
		"héllo":         "H_LLO",
		"":              "ATTR_",
		"x509Cert":      "X509_CERT",
	} {
		got := FieldName(key)
		if got != want {
			t.Errorf("FieldName(%q) = %q, want %q", key, got, want)
		}
		if !validName.MatchString(got) {
			t.Errorf("FieldName(%q) = %q is not a journal field name", key, got)
		}
	}
	if got := FieldName(strings.Repeat("a", 100)); len(got) != 64 {
		t.Errorf("a 100-character key maps to %d characters", len(got))
	}
}

// A journal that stops listening mid-run: the records that follow reach
// the fallback, after one warning saying why.
func TestHandlerFallsBackWhenTheJournalGoes(t *testing.T) {
	path, conn := listen(t)
	var out strings.Builder
	fallback := slog.NewTextHandler(&out, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})
	h, err := New(path, Options{Fallback: fallback})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lg := slog.New(h).With("run", 1)
	lg.Info("first")
	if got := receive(t, conn)["MESSAGE"]; got != "first" {
		t.Fatalf("journal got %q", got)
	}
	conn.Close()
	lg.Info("second", "state", "Persist")
	lg.Info("third")
	want := `level=WARN msg="the journal stopped taking records: logging to stderr instead" run=1 err="connection refused"
level=INFO msg=second run=1 state=Persist
level=INFO msg=third run=1
`
	if out.String() != want {
		t.Errorf("fallback got\n%s\nwant\n%s", out.String(), want)
	}
}
