package host

import (
	"context"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// slogAdapter is an hclog.Logger that writes to a slog.Logger: go-plugin
// logs through hclog, both its own messages and each line a plugin writes
// to stderr, and all of it belongs in fleetprov's one log.
type slogAdapter struct {
	l       *slog.Logger
	name    string
	implied []any
	level   hclog.Level
}

var _ hclog.Logger = (*slogAdapter)(nil)

func newSlogAdapter(l *slog.Logger) *slogAdapter {
	return &slogAdapter{l: l, level: hclog.Trace}
}

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Info, hclog.NoLevel:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func (a *slogAdapter) Log(level hclog.Level, msg string, args ...any) {
	// go-plugin hands a plugin's stderr line that is not a JSON log record
	// to its named logger at Debug, with no attributes: raise those to
	// Info, where they are seen by default, unless the line says its own
	// level.
	if a.name != "" && len(args) == 0 && level == hclog.Debug && !strings.HasPrefix(msg, "[DEBUG]") {
		level = hclog.Info
	}
	// go-plugin's own progress reports (started, exited) are detail.
	if a.name == "" && level == hclog.Info {
		level = hclog.Debug
	}
	if level < a.level {
		return
	}
	all := make([]any, 0, len(a.implied)+len(args))
	all = append(all, a.implied...)
	for i := 0; i+1 < len(args); i += 2 {
		// The plugin's own timestamp repeats the one the record gets.
		if k, _ := args[i].(string); k == "timestamp" {
			continue
		}
		all = append(all, args[i], args[i+1])
	}
	a.l.Log(context.Background(), slogLevel(level), msg, all...)
}

func (a *slogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *slogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *slogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *slogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *slogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *slogAdapter) enabled(l hclog.Level) bool {
	return l >= a.level && a.l.Enabled(context.Background(), slogLevel(l))
}
func (a *slogAdapter) IsTrace() bool { return a.enabled(hclog.Trace) }
func (a *slogAdapter) IsDebug() bool { return a.enabled(hclog.Debug) }
func (a *slogAdapter) IsInfo() bool  { return a.enabled(hclog.Info) }
func (a *slogAdapter) IsWarn() bool  { return a.enabled(hclog.Warn) }
func (a *slogAdapter) IsError() bool { return a.enabled(hclog.Error) }

func (a *slogAdapter) ImpliedArgs() []any { return a.implied }

func (a *slogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.implied = append(append([]any(nil), a.implied...), args...)
	return &c
}

func (a *slogAdapter) Name() string { return a.name }

// Named marks the sub-logger go-plugin uses for a plugin's stderr; the
// plugin's name is already on the slog logger, so the binary's file name
// is not repeated.
func (a *slogAdapter) Named(name string) hclog.Logger {
	c := *a
	if c.name == "" {
		c.name = name
	} else {
		c.name += "." + name
	}
	return &c
}

func (a *slogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	return &c
}

func (a *slogAdapter) SetLevel(level hclog.Level) { a.level = level }
func (a *slogAdapter) GetLevel() hclog.Level      { return a.level }

func (a *slogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(a.l.Handler(), slog.LevelInfo)
}

func (a *slogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return a.StandardLogger(nil).Writer()
}
