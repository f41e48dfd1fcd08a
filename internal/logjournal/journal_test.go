package logjournal

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/internal/logjournal/journaltest"
)

func TestHandlerSendsNativeEntries(t *testing.T) {
	j := journaltest.Listen(t)
	h, err := New(j.Path, Options{Level: slog.LevelDebug, Identifier: "fleetprov"})
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
		got := j.Next(t)
		want := map[string]string{"MESSAGE": "state done", "PRIORITY": tc.priority, "SYSLOG_IDENTIFIER": "fleetprov",
			"STATE": "CreateCertificate", "CERTIFICATE_ID": "ab12", "DURATION": "1.5s"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%v record: got %v, want %v", tc.level, got, want)
		}
	}

	// Attributes of With and groups, an error, a value over several lines.
	lg.With("thing", "gg_1").WithGroup("hook").Error("hook failed", "name", "gate", "err", errors.New("exit status 3"), "stderr", "line one\nline two")
	got := j.Next(t)
	want := map[string]string{"MESSAGE": "hook failed", "PRIORITY": "3", "SYSLOG_IDENTIFIER": "fleetprov",
		"THING": "gg_1", "HOOK_NAME": "gate", "HOOK_ERR": "exit status 3", "HOOK_STDERR": "line one\nline two"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestHandlerLevel(t *testing.T) {
	j := journaltest.Listen(t)
	h, err := New(j.Path, Options{Level: slog.LevelWarn})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lg := slog.New(h)
	lg.Info("below the level")
	lg.Warn("at the level")
	if got := j.Next(t)["MESSAGE"]; got != "at the level" {
		t.Errorf("first entry = %q: a record below the level was sent", got)
	}
}

// An entry larger than a datagram may be reaches the journal through a
// sealed memory file, whole.
func TestHandlerLargeEntry(t *testing.T) {
	j := journaltest.Listen(t)
	h, err := New(j.Path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	big := strings.Repeat("x", 600<<10)
	slog.New(h).Info("big", "blob", big)
	got := j.Next(t)
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
		if _, err := journaltest.Parse([]byte(got + "=x\n")); err != nil {
			t.Errorf("FieldName(%q) = %q: %v", key, got, err)
		}
	}
	if got := FieldName(strings.Repeat("a", 100)); len(got) != 64 {
		t.Errorf("a 100-character key maps to %d characters", len(got))
	}
}

// A journal that stops listening mid-run: the records that follow reach
// the fallback, after one warning saying why.
func TestHandlerFallsBackWhenTheJournalGoes(t *testing.T) {
	j := journaltest.Listen(t)
	var out strings.Builder
	fallback := slog.NewTextHandler(&out, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})
	h, err := New(j.Path, Options{Fallback: fallback})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lg := slog.New(h).With("run", 1)
	lg.Info("first")
	if got := j.Next(t)["MESSAGE"]; got != "first" {
		t.Fatalf("journal got %q", got)
	}
	j.Close()
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
