package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetprov/fleetprov/cli"
	"github.com/fleetprov/fleetprov/cli/cloudcmd"
)

// Every command a user can type has a page, fleetprov-run's among them
// (packaging/nfpm.yaml links fleet-provisioning(1) to it), and the same
// date gives the same bytes, so that a package can be rebuilt exactly.
func TestManPagesAndCompletions(t *testing.T) {
	date := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	a, b := t.TempDir(), t.TempDir()
	for _, dir := range []string{a, b} {
		if err := generate(cli.Build{Commands: cloudcmd.Commands}.Tree(), dir, "1.2.3", date); err != nil {
			t.Fatal(err)
		}
	}

	var want []string
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		want = append(want, strings.ReplaceAll(c.CommandPath(), " ", "-")+".1.gz")
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				walk(sub)
			}
		}
	}
	root := cli.Build{Commands: cloudcmd.Commands}.Tree()
	root.InitDefaultCompletionCmd()
	walk(root)
	for _, name := range append(want, "fleetprov-run.1.gz", "fleetprov-cloud-serve.1.gz", "fleetprov-completion-bash.1.gz") {
		page := filepath.Join(a, "man", "man1", name)
		text := gunzip(t, page)
		if !strings.Contains(text, `.TH "`) || !strings.Contains(text, `"fleetprov 1.2.3"`) || !strings.Contains(text, "Jan 2026") {
			t.Errorf("%s: no .TH header naming fleetprov 1.2.3 and Jan 2026:\n%s", name, text)
		}
		other, err := os.ReadFile(filepath.Join(b, "man", "man1", name))
		if err != nil {
			t.Fatal(err)
		}
		if mine, _ := os.ReadFile(page); !bytes.Equal(mine, other) {
			t.Errorf("%s differs between two runs with the same date", name)
		}
	}
	if text := gunzip(t, filepath.Join(a, "man", "man1", "fleetprov.1.gz")); !strings.Contains(text, `--version`) {
		t.Errorf("fleetprov(1) does not list --version:\n%s", text)
	}

	for path, marker := range map[string]string{
		"bash/fleetprov":      "__start_fleetprov",
		"zsh/_fleetprov":      "#compdef fleetprov",
		"fish/fleetprov.fish": "complete -c fleetprov",
	} {
		b, err := os.ReadFile(filepath.Join(a, "completions", path))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), marker) {
			t.Errorf("completions/%s lacks %q", path, marker)
		}
	}
}

func TestSourceDateEpoch(t *testing.T) {
	if d, err := sourceDate("1767312000"); err != nil || !d.Equal(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("sourceDate(1767312000) = %v, %v; want 2026-01-02", d, err)
	}
	if _, err := sourceDate("yesterday"); err == nil || err.Error() != `SOURCE_DATE_EPOCH "yesterday" is not a number of seconds` {
		t.Errorf("sourceDate(yesterday): %v", err)
	}
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return string(b)
}
