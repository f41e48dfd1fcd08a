package cloudsim

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// brokerLogHandler passes mochi's records to the emulator's handler, so one
// log level governs both, while keeping mochi's lifecycle chatter ("added
// hook", "mochi mqtt starting", ...) out of an info-level log: mochi's Info
// becomes Debug. It also names mochi's nameless connection warnings and
// quietens the ones every shutdown produces.
//
// mochi attaches whole packets to some records (a protocol error logs the
// packet that caused it), and a packet's payload or CONNECT password can
// hold an ownership token or a key: the handler keeps only what names a
// packet (redactAttr), never its contents.
type brokerLogHandler struct{ next slog.Handler }

func (h brokerLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if l == slog.LevelInfo {
		l = slog.LevelDebug
	}
	return h.next.Enabled(ctx, l)
}

func (h brokerLogHandler) Handle(ctx context.Context, r slog.Record) error {
	level, msg := r.Level, r.Message
	if level == slog.LevelInfo {
		level = slog.LevelDebug
	}
	if msg == "" {
		msg = "connection ended"
		r.Attrs(func(a slog.Attr) bool {
			if a.Key != "error" {
				return true
			}
			switch e := a.Value.String(); {
			case strings.Contains(e, "use of closed network connection"):
				level = slog.LevelDebug
			case strings.HasPrefix(e, "read connection: ") && strings.HasSuffix(e, "i/o timeout"):
				// Options.ConnectTimeout at work: a port scan or a
				// stalled device, not a fault of the emulator.
				level, msg = slog.LevelInfo, "connection closed: no TLS handshake and CONNECT within the deadline"
			}
			return true
		})
	}
	if !h.next.Enabled(ctx, level) {
		return nil
	}
	out := slog.NewRecord(r.Time, level, msg, r.PC)
	r.Attrs(func(a slog.Attr) bool { out.AddAttrs(redactAttr(a)); return true })
	return h.next.Handle(ctx, out)
}

func (h brokerLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	safe := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		safe[i] = redactAttr(a)
	}
	return brokerLogHandler{next: h.next.WithAttrs(safe)}
}

func (h brokerLogHandler) WithGroup(name string) slog.Handler {
	return brokerLogHandler{next: h.next.WithGroup(name)}
}

// redactAttr passes scalars and errors (mochi's errors are fixed texts and
// network errors) and replaces anything else: a packet by its type and
// packet id, other values by their type alone. It is an allowlist so that a
// value mochi starts logging in a later version is hidden until looked at.
func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		group := v.Group()
		safe := make([]any, len(group))
		for i, g := range group {
			safe[i] = redactAttr(g)
		}
		return slog.Group(a.Key, safe...)
	case slog.KindAny:
	default:
		return slog.Attr{Key: a.Key, Value: v}
	}
	switch x := v.Any().(type) {
	case nil:
		return slog.Attr{Key: a.Key, Value: v}
	case error:
		return slog.String(a.Key, x.Error())
	case packets.Packet:
		return slog.String(a.Key, packetSummary(x))
	case *packets.Packet:
		if x == nil {
			return slog.String(a.Key, "none")
		}
		return slog.String(a.Key, packetSummary(*x))
	case mqtt.Will:
		return slog.String(a.Key, "will (contents not logged)")
	default:
		return slog.String(a.Key, fmt.Sprintf("%T (not logged)", x))
	}
}

func packetSummary(pk packets.Packet) string {
	name := packets.PacketNames[pk.FixedHeader.Type]
	if name == "" {
		name = fmt.Sprintf("type %d", pk.FixedHeader.Type)
	}
	if pk.PacketID != 0 {
		return fmt.Sprintf("%s id %d (contents not logged)", strings.ToUpper(name), pk.PacketID)
	}
	return strings.ToUpper(name) + " (contents not logged)"
}
