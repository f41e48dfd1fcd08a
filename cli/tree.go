package cli

import (
	"io"

	"github.com/spf13/cobra"
)

// Tree returns this build's command tree as Main would run it, without
// running it. Generators of man pages and shell completions document the
// binary from it, so that their renderers are not linked into the binary.
func (b Build) Tree() *cobra.Command {
	app := &App{Stdout: io.Discard, Stderr: io.Discard, build: b}
	root := newRootCmd(app)
	for _, c := range b.Commands {
		root.AddCommand(c(app))
	}
	return root
}
