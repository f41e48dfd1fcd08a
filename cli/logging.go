package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/internal/logjournal"
	"github.com/fleetprov/fleetprov/internal/outputseam"
)

// Log formats of --log-format.
const (
	FormatText    = "text"
	FormatJSON    = "json"
	FormatJournal = "journal"
)

// progressAnnotation marks a command that prints progress lines (run,
// demo): its default output differs on a terminal.
const progressAnnotation = "fleetprov.progress"

// ShowsProgress marks cmd as one that prints a progress line per step:
// by default, on a terminal, it prints those and only warnings besides.
func ShowsProgress(cmd *cobra.Command) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[progressAnnotation] = "true"
	return cmd
}

// output is where a command's story goes: progress lines on stdout, or
// the engine's events as log records, never both, so that each step is
// said once.
type output struct {
	// progress: print a line per step on stdout; the log carries only
	// what those lines do not (details, warnings).
	progress bool
	// format and level actually in use (format "text" when the journal
	// was asked for but is not there).
	format string
	level  slog.Level
	// terminal: a person reads the records as they come.
	terminal bool
	// closer releases the journal connection.
	closer io.Closer
}

// eventsLogged says whether the engine's events, failures included, are
// log records: then the final error line would say a failure twice.
func (o output) eventsLogged() bool { return !o.progress }

// setupOutput picks the log handler and whether progress lines are
// printed, from --log-format and --log-level and, where they are not
// given, from where the output goes (see docs/configuration.md, Logging):
//   - under systemd (stderr is the journal's stream): the journal;
//   - a progress command on a terminal: progress lines, and warnings;
//   - a progress command otherwise (a pipe, a file, CI): progress lines on
//     stdout, and the details on stderr as text log records;
//   - any other command: text log records on stderr.
func (app *App) setupOutput(cmd *cobra.Command) error {
	levelSet := app.LogLevel != ""
	level := slog.LevelInfo
	if levelSet {
		if err := level.UnmarshalText([]byte(app.LogLevel)); err != nil {
			return failure.Usage(fmt.Sprintf("--log-level %q is not a level: use debug, info, warn or error", app.LogLevel))
		}
	}
	format := app.LogFormat
	switch format {
	case "", FormatText, FormatJSON, FormatJournal:
	default:
		return failure.Usage(fmt.Sprintf("--log-format %q is not a format: use text, json or journal", format))
	}
	progress := false
	terminal := false
	if format == "" {
		switch {
		case underSystemd(app.Stderr):
			format = FormatJournal
		case cmd.Annotations[progressAnnotation] == "true":
			progress = true
			format = FormatText
			if terminal = isTerminal(app.Stdout); terminal && !levelSet {
				// The progress lines tell the story; only what needs
				// attention is added.
				level = slog.LevelWarn
			}
		default:
			format = FormatText
		}
	}
	o := output{progress: progress, format: format, level: level, terminal: terminal}
	logger, closer := newHandler(app.Stderr, &o)
	o.closer = closer
	app.Logger, app.out = logger, o
	return nil
}

// Quiet sets the level of the log records, keeping their format: a
// command whose own lines tell its story (demo) quiets the details.
func (app *App) Quiet(level string) error {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return err
	}
	o := app.out
	o.level = lv
	if o.closer != nil {
		o.closer.Close()
	}
	logger, closer := newHandler(app.Stderr, &o)
	o.closer = closer
	app.Logger, app.out = logger, o
	return nil
}

// newHandler makes the logger of o. A journal that is not there falls
// back to text on stderr, and says so once: a journal handler with no
// socket would drop every record without a word.
func newHandler(stderr io.Writer, o *output) (*slog.Logger, io.Closer) {
	opts := &slog.HandlerOptions{Level: o.level}
	if o.terminal {
		// A person reads it as it comes: the time adds nothing.
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	switch o.format {
	case FormatJSON:
		return slog.New(slog.NewJSONHandler(stderr, opts)), nil
	case FormatJournal:
		socket := outputseam.JournalSocket(logjournal.DefaultSocket)
		h, err := logjournal.New(socket, logjournal.Options{Level: o.level, Identifier: "fleetprov",
			Fallback: slog.NewTextHandler(stderr, opts)})
		if err == nil {
			return slog.New(h), h
		}
		o.format = FormatText
		lg := slog.New(slog.NewTextHandler(stderr, opts))
		lg.Warn("no journal to log to: logging to stderr instead", "socket", socket, "err", rootCause(err))
		return lg, nil
	}
	return slog.New(slog.NewTextHandler(stderr, opts)), nil
}

// rootCause is the innermost error's text ("no such file or directory").
func rootCause(err error) string {
	line := failure.Line(err)
	if i := strings.Index(line, "; "); i >= 0 {
		return line[:i]
	}
	return line
}

// isTerminal reports whether w is a terminal (tests may say).
func isTerminal(w io.Writer) bool {
	if is, set := outputseam.Terminal(); set {
		return is
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// underSystemd reports whether stderr is the journal's stream: systemd
// sets JOURNAL_STREAM to "DEVICE:INODE" of the stream it connects a
// service's stderr to, and a process whose stderr was redirected elsewhere
// keeps the variable but not the stream.
func underSystemd(stderr io.Writer) bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	f, isFile := stderr.(*os.File)
	if !isFile {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return dev == strconv.FormatUint(uint64(st.Dev), 10) && ino == strconv.FormatUint(st.Ino, 10)
}

// closeOutput releases the journal connection, if any.
func (app *App) closeOutput() {
	if app.out.closer != nil {
		app.out.closer.Close()
		app.out.closer = nil
	}
}
