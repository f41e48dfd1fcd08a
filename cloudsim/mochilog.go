package cloudsim

import (
	"context"
	"log/slog"
	"strings"
)

// brokerLogHandler passes mochi's records to the emulator's handler, so one
// log level governs both, while keeping mochi's lifecycle chatter ("added
// hook", "mochi mqtt starting", ...) out of an info-level log: mochi's Info
// becomes Debug. It also names mochi's nameless connection warnings and
// quietens the ones every shutdown produces.
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
			if a.Key == "error" && strings.Contains(a.Value.String(), "use of closed network connection") {
				level = slog.LevelDebug
			}
			return true
		})
	}
	if !h.next.Enabled(ctx, level) {
		return nil
	}
	out := slog.NewRecord(r.Time, level, msg, r.PC)
	r.Attrs(func(a slog.Attr) bool { out.AddAttrs(a); return true })
	return h.next.Handle(ctx, out)
}

func (h brokerLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return brokerLogHandler{next: h.next.WithAttrs(attrs)}
}

func (h brokerLogHandler) WithGroup(name string) slog.Handler {
	return brokerLogHandler{next: h.next.WithGroup(name)}
}
