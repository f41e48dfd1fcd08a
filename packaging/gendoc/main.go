// Command gendoc writes fleetprov's man pages and shell completions from its
// command tree, for the .deb (see docs/packaging.md). It is a program of its
// own so that the man-page renderer stays out of the device binary.
//
//	go run ./packaging/gendoc -out DIR -version 1.2.0
//
// writes DIR/man/man1/*.1.gz and DIR/completions/{bash,zsh,fish}/...
// Dates come from SOURCE_DATE_EPOCH when it is set, so that two builds of
// one commit give the same files.
package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/fleetprov/fleetprov/cli"
	"github.com/fleetprov/fleetprov/cli/cloudcmd"
)

func main() {
	out := flag.String("out", "", "directory to write man/ and completions/ into (required)")
	version := flag.String("version", "", "version named in the man pages' footer (required)")
	flag.Parse()
	if *out == "" || *version == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "gendoc: usage: gendoc -out DIR -version VERSION")
		os.Exit(2)
	}
	date, err := sourceDate(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "gendoc: %v\n", err)
		os.Exit(2)
	}
	// The same tree as cmd/fleetprov's: the standard build, with the local
	// cloud's commands.
	root := cli.Build{Commands: cloudcmd.Commands}.Tree()
	if err := generate(root, *out, *version, date); err != nil {
		fmt.Fprintf(os.Stderr, "gendoc: %v\n", err)
		os.Exit(1)
	}
}

func sourceDate(epoch string) (time.Time, error) {
	if epoch == "" {
		return time.Now().UTC(), nil
	}
	s, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q is not a number of seconds", epoch)
	}
	return time.Unix(s, 0).UTC(), nil
}

func generate(root *cobra.Command, out, version string, date time.Time) error {
	// Main adds these when it runs; a generator must add them itself so
	// that the pages and completions know --version, `completion` and
	// `help`.
	root.InitDefaultVersionFlag()
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	manDir := filepath.Join(out, "man", "man1")
	if err := os.MkdirAll(manDir, 0o755); err != nil {
		return err
	}
	if err := manPages(root, manDir, version, date); err != nil {
		return err
	}
	return completions(root, filepath.Join(out, "completions"))
}

// manPages writes one gzip-compressed page per command, named as
// cobra's GenManTree names them (fleetprov-cloud-init.1), as Debian
// wants pages installed.
func manPages(cmd *cobra.Command, dir, version string, date time.Time) error {
	for _, c := range cmd.Commands() {
		if !c.IsAvailableCommand() || c.IsAdditionalHelpTopicCommand() {
			continue
		}
		if err := manPages(c, dir, version, date); err != nil {
			return err
		}
	}
	// The footer would otherwise carry the time of generation.
	cmd.DisableAutoGenTag = true
	header := &doc.GenManHeader{
		Section: "1",
		Date:    &date,
		Source:  "fleetprov " + version,
		Manual:  "fleetprov manual",
	}
	var page bytes.Buffer
	if err := doc.GenMan(cmd, header, &page); err != nil {
		return fmt.Errorf("man page of %q: %w", cmd.CommandPath(), err)
	}
	name := strings.ReplaceAll(cmd.CommandPath(), " ", "-") + ".1.gz"
	return writeGzip(filepath.Join(dir, name), page.Bytes())
}

func completions(root *cobra.Command, dir string) error {
	shells := []struct {
		path string
		gen  func(io.Writer) error
	}{
		{"bash/fleetprov", func(w io.Writer) error { return root.GenBashCompletionV2(w, true) }},
		{"zsh/_fleetprov", root.GenZshCompletion},
		{"fish/fleetprov.fish", func(w io.Writer) error { return root.GenFishCompletion(w, true) }},
	}
	for _, s := range shells {
		var buf bytes.Buffer
		if err := s.gen(&buf); err != nil {
			return fmt.Errorf("%s completion: %w", filepath.Dir(s.path), err)
		}
		p := filepath.Join(dir, s.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeGzip compresses at the best level with no name or time in the
// header (gzip -9n), so that the same page gives the same bytes.
func writeGzip(path string, data []byte) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	_, werr := zw.Write(data)
	if err := errors.Join(werr, zw.Close()); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
