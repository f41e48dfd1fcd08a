package cli

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/fleetprov/fleetprov/internal/outputseam"
)

// The defaults of each kind of command and output, and the flags that
// override them. Tests in this package that set the seam do not run in
// parallel.
func TestSetupOutputDefaults(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "")
	missing := filepath.Join(t.TempDir(), "no.socket")
	outputseam.SetJournalSocket(missing)
	run := ShowsProgress(&cobra.Command{Use: "run"})
	status := &cobra.Command{Use: "status"}
	for _, tc := range []struct {
		name          string
		cmd           *cobra.Command
		terminal      bool
		format, level string
		wantProgress  bool
		wantFormat    string
		wantLevel     slog.Level
	}{
		{"run on a terminal", run, true, "", "", true, FormatText, slog.LevelWarn},
		{"run on a terminal, level asked", run, true, "", "debug", true, FormatText, slog.LevelDebug},
		{"run in a pipe", run, false, "", "", true, FormatText, slog.LevelInfo},
		{"run, format asked", run, true, "json", "", false, FormatJSON, slog.LevelInfo},
		{"run, journal asked but absent", run, true, "journal", "error", false, FormatText, slog.LevelError},
		{"status on a terminal", status, true, "", "", false, FormatText, slog.LevelInfo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outputseam.SetTerminal(tc.terminal)
			var stderr bytes.Buffer
			app := &App{Stdout: os.Stdout, Stderr: &stderr, LogFormat: tc.format, LogLevel: tc.level}
			if err := app.setupOutput(tc.cmd); err != nil {
				t.Fatal(err)
			}
			defer app.closeOutput()
			if app.out.progress != tc.wantProgress || app.out.format != tc.wantFormat || app.out.level != tc.wantLevel {
				t.Errorf("progress %v, format %s, level %v; want %v, %s, %v", app.out.progress, app.out.format, app.out.level, tc.wantProgress, tc.wantFormat, tc.wantLevel)
			}
		})
	}
}

func TestSetupOutputRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct{ format, level, want string }{
		{"logfmt", "", `--log-format "logfmt" is not a format: use text, json or journal`},
		{"", "loud", `--log-level "loud" is not a level: use debug, info, warn or error`},
	} {
		app := &App{Stdout: os.Stdout, Stderr: os.Stderr, LogFormat: tc.format, LogLevel: tc.level}
		err := app.setupOutput(&cobra.Command{})
		if err == nil || err.Error() != tc.want {
			t.Errorf("--log-format %q --log-level %q: %v, want %s", tc.format, tc.level, err, tc.want)
		}
	}
}

// On a terminal the records beside the progress lines carry no time: a
// person reads them as they come.
func TestTerminalRecordsHaveNoTime(t *testing.T) {
	outputseam.SetTerminal(true)
	var stderr bytes.Buffer
	app := &App{Stdout: os.Stdout, Stderr: &stderr}
	if err := app.setupOutput(ShowsProgress(&cobra.Command{})); err != nil {
		t.Fatal(err)
	}
	app.Logger.Info("detail")
	app.Logger.Warn("claim certificate expires soon", "days", 3)
	if got, want := stderr.String(), "level=WARN msg=\"claim certificate expires soon\" days=3\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
	if strings.Contains(stderr.String(), "time=") {
		t.Error("a terminal record has a time")
	}
}
