// Package logjournal is a log/slog handler that sends each record to the
// systemd journal as one entry of its native protocol: MESSAGE, PRIORITY
// from the level, SYSLOG_IDENTIFIER, and every attribute as a field of its
// own, so that `journalctl STATE=CreateCertificate` finds a step's records.
//
// It dials the journal's socket when made: a socket that is not there is
// an error the caller can act on (fall back to stderr), where a handler that
// dialled lazily would drop every record without a word. A journal that
// goes away later hands the records to Options.Fallback.
package logjournal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"

	"golang.org/x/sys/unix"
)

// DefaultSocket is where journald listens for native-protocol datagrams.
const DefaultSocket = "/run/systemd/journal/socket"

// Options configure a Handler.
type Options struct {
	// Level is the lowest level sent; nil sends Info and above.
	Level slog.Leveler
	// Identifier is the entry's SYSLOG_IDENTIFIER (journalctl -t).
	Identifier string
	// Fallback takes the records once the journal stops taking them
	// (journald stopped or restarted), after a warning saying why; nil
	// drops them.
	Fallback slog.Handler
}

// Handler sends records to the journal. Its methods are safe for
// concurrent use: each entry is one datagram.
type Handler struct {
	conn     *net.UnixConn
	opts     Options
	pre      []byte // fields of WithAttrs, encoded
	prefix   string // field name prefix of WithGroup
	fallback slog.Handler
	// failed is shared by the handlers WithAttrs and WithGroup derive:
	// the journal is gone for all of them.
	failed *atomic.Bool
}

var _ slog.Handler = (*Handler)(nil)

// New connects to the journal's socket (DefaultSocket unless a test names
// its own). It fails when nothing listens there.
func New(socket string, opts Options) (*Handler, error) {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("journal socket %s: %w", socket, err)
	}
	if opts.Level == nil {
		opts.Level = slog.LevelInfo
	}
	return &Handler{conn: conn, opts: opts, fallback: opts.Fallback, failed: new(atomic.Bool)}, nil
}

// Close closes the connection to the journal.
func (h *Handler) Close() error { return h.conn.Close() }

func (h *Handler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.opts.Level.Level()
}

func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if h.failed.Load() && h.fallback != nil {
		return h.fallback.Handle(ctx, r)
	}
	b := make([]byte, 0, 512)
	b = appendField(b, "MESSAGE", r.Message)
	b = appendField(b, "PRIORITY", strconv.Itoa(Priority(r.Level)))
	if h.opts.Identifier != "" {
		b = appendField(b, "SYSLOG_IDENTIFIER", h.opts.Identifier)
	}
	b = append(b, h.pre...)
	r.Attrs(func(a slog.Attr) bool {
		b = appendAttr(b, h.prefix, a)
		return true
	})
	err := h.send(b)
	if err == nil || h.fallback == nil {
		return err
	}
	if h.failed.CompareAndSwap(false, true) {
		w := slog.NewRecord(time.Now(), slog.LevelWarn, "the journal stopped taking records: logging to stderr instead", 0)
		// The errno says it ("connection refused"); the socket
		// address around it adds nothing.
		var errno syscall.Errno
		if errors.As(err, &errno) {
			err = errno
		}
		w.AddAttrs(slog.String("err", err.Error()))
		_ = h.fallback.Handle(ctx, w)
	}
	return h.fallback.Handle(ctx, r)
}

func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	h2.pre = slices.Clip(h.pre)
	for _, a := range attrs {
		h2.pre = appendAttr(h2.pre, h.prefix, a)
	}
	if h.fallback != nil {
		h2.fallback = h.fallback.WithAttrs(attrs)
	}
	return &h2
}

func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + FieldName(name) + "_"
	if h.fallback != nil {
		h2.fallback = h.fallback.WithGroup(name)
	}
	return &h2
}

// send writes one entry. An entry too large for a datagram goes as a
// sealed memory file passed over the socket, as the protocol provides.
func (h *Handler) send(b []byte) error {
	_, err := h.conn.Write(b)
	if err == nil || (!errors.Is(err, syscall.EMSGSIZE) && !errors.Is(err, syscall.ENOBUFS)) {
		return err
	}
	fd, err := unix.MemfdCreate("journal-entry", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("journal entry of %d bytes: %w", len(b), err)
	}
	defer unix.Close(fd)
	for rest := b; len(rest) > 0; {
		n, err := unix.Write(fd, rest)
		if err != nil {
			return fmt.Errorf("journal entry of %d bytes: %w", len(b), err)
		}
		rest = rest[n:]
	}
	// journald takes a memory file only sealed against change.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL); err != nil {
		return fmt.Errorf("journal entry of %d bytes: %w", len(b), err)
	}
	// The connection is connected, so net refuses WriteMsgUnix on it:
	// send the descriptor with sendmsg on the socket itself.
	raw, err := h.conn.SyscallConn()
	if err != nil {
		return err
	}
	var sendErr error
	if err := raw.Write(func(s uintptr) bool {
		sendErr = unix.Sendmsg(int(s), nil, unix.UnixRights(fd), nil, 0)
		return !errors.Is(sendErr, unix.EAGAIN)
	}); err != nil {
		return err
	}
	return sendErr
}

// Priority is the syslog priority of a slog level: debug 7, info 6,
// warning 4, error 3.
func Priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}

// reserved are the journal's own fields of entries a client sends: an
// attribute that maps onto one is prefixed so it cannot override them.
var reserved = map[string]bool{
	"MESSAGE": true, "MESSAGE_ID": true, "PRIORITY": true, "CODE_FILE": true, "CODE_LINE": true,
	"CODE_FUNC": true, "ERRNO": true, "INVOCATION_ID": true, "USER_INVOCATION_ID": true,
	"SYSLOG_FACILITY": true, "SYSLOG_IDENTIFIER": true, "SYSLOG_PID": true, "SYSLOG_TIMESTAMP": true,
	"SYSLOG_RAW": true, "DOCUMENTATION": true, "TID": true, "UNIT": true, "USER_UNIT": true,
}

// maxName is the journal's limit on a field name's length.
const maxName = 64

// FieldName maps an attribute key to a journal field name, which must
// match ^[A-Z_][A-Z0-9_]*$ and must not start with "_" (those are the
// fields journald itself adds): certificateId becomes CERTIFICATE_ID,
// "next to" NEXT_TO; a key that would start with a digit or name one of the
// journal's own fields gets the prefix ATTR_.
func FieldName(key string) string {
	var b strings.Builder
	var prev rune
	for _, r := range key {
		switch {
		case unicode.IsUpper(r) && r < unicode.MaxASCII:
			if unicode.IsLower(prev) || unicode.IsDigit(prev) {
				b.WriteByte('_')
			}
			b.WriteRune(r)
		case (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
			b.WriteRune(unicode.ToUpper(r))
		default:
			if s := b.String(); s != "" && !strings.HasSuffix(s, "_") {
				b.WriteByte('_')
			}
		}
		prev = r
	}
	name := strings.Trim(b.String(), "_")
	if name == "" || (name[0] >= '0' && name[0] <= '9') || reserved[name] {
		name = "ATTR_" + name
	}
	if len(name) > maxName {
		name = strings.TrimRight(name[:maxName], "_")
	}
	return name
}

func appendAttr(b []byte, prefix string, a slog.Attr) []byte {
	v := a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return b
	}
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += FieldName(a.Key) + "_"
		}
		for _, ga := range v.Group() {
			b = appendAttr(b, p, ga)
		}
		return b
	}
	var s string
	switch v.Kind() {
	case slog.KindTime:
		s = v.Time().Format(time.RFC3339Nano)
	default:
		s = v.String()
	}
	name := FieldName(a.Key)
	if prefix != "" {
		name = strings.TrimPrefix(name, "ATTR_")
		name = prefix + name
		if len(name) > maxName {
			name = strings.TrimRight(name[:maxName], "_")
		}
	}
	return appendField(b, name, s)
}

// appendField encodes one field: NAME=value and a newline, or, for a value
// holding a newline, NAME, a newline, its length as 64-bit little endian,
// the value and a newline.
func appendField(b []byte, name, value string) []byte {
	if !strings.Contains(value, "\n") {
		b = append(b, name...)
		b = append(b, '=')
		b = append(b, value...)
		return append(b, '\n')
	}
	b = append(b, name...)
	b = append(b, '\n')
	b = binary.LittleEndian.AppendUint64(b, uint64(len(value)))
	b = append(b, value...)
	return append(b, '\n')
}
