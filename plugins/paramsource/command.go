package paramsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"strings"
	"time"

	"github.com/fleetprov/fleetprov/internal/childenv"
	"github.com/fleetprov/fleetprov/internal/procgroup"
)

// DefaultCommandTimeout bounds a command source that sets no timeout.
const DefaultCommandTimeout = 5 * time.Second

// commandKillGrace is how long a killed command's pipes may stay open (held
// by a child that escaped the kill) before the wait gives up on them.
const commandKillGrace = 2 * time.Second

// command: the first line a program prints, run without a shell.
func openCommand(req *OpenRequest) (ParamSource, error) {
	var argv []string
	switch v := req.Options["command"].(type) {
	case nil:
	case string:
		v = strings.TrimSpace(v)
		if strings.ContainsAny(v, " \t") {
			return nil, fmt.Errorf("command %q has spaces, but no shell runs it: write it as a list, e.g. [%s]", v, strings.Join(strings.Fields(v), ", "))
		}
		if v != "" {
			argv = []string{v}
		}
	case []string:
		argv = v
	}
	if len(argv) == 0 || strings.TrimSpace(argv[0]) == "" {
		return nil, errors.New("command is missing: set it to the program and its arguments as a list, e.g. [/usr/bin/vendor-serial, --short]")
	}
	timeout, err := req.DurationOption("timeout", DefaultCommandTimeout)
	if err != nil {
		return nil, err
	}
	c := &commandSource{argv: argv, timeout: timeout}
	return funcSource{param: req.Param, value: c.run}, nil
}

type commandSource struct {
	argv    []string
	timeout time.Duration
}

func (c *commandSource) run(ctx context.Context) (string, error) {
	name := strings.Join(c.argv, " ")
	tctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cmd := exec.CommandContext(tctx, c.argv[0], c.argv[1:]...)
	cmd.Env = childenv.Environ()
	procgroup.KillOnCancel(cmd)
	cmd.WaitDelay = commandKillGrace
	var stdout capped
	var stderr tail
	stdout.max = maxLine
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	last := stderr.lastLine()
	withStderr := func(msg string) error {
		if last != "" {
			msg += ": " + last
		}
		return errors.New(msg)
	}
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return "", fmt.Errorf("command %s interrupted: %w", name, ctx.Err())
	case errors.Is(tctx.Err(), context.DeadlineExceeded):
		return "", withStderr(fmt.Sprintf("command %s did not finish within %s (raise timeout if it needs longer)", name, c.timeout))
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("command %s not found: install it or fix command", c.argv[0])
	case errors.Is(err, fs.ErrPermission):
		return "", fmt.Errorf("command %s cannot be run (permission denied): make it executable", c.argv[0])
	default:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ee.Exited() {
				return "", withStderr(fmt.Sprintf("command %s exited with status %d", name, ee.ExitCode()))
			}
			return "", withStderr(fmt.Sprintf("command %s was killed (%s)", name, ee.String()))
		}
		return "", fmt.Errorf("command %s cannot be run: %w", name, err)
	}
	first, _, _ := strings.Cut(stdout.String(), "\n")
	if v := strings.TrimSpace(first); v != "" {
		return v, nil
	}
	if strings.TrimSpace(stdout.String()) == "" {
		return "", fmt.Errorf("command %s printed nothing", name)
	}
	return "", fmt.Errorf("the first line command %s printed is empty", name)
}

// capped keeps the first max bytes written to it and drops the rest, so a
// chatty command cannot fill memory.
type capped struct {
	bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// tail keeps the last few KiB written to it: enough for the last line.
type tail struct{ b []byte }

const tailSize = 4 << 10

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - tailSize; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tail) lastLine() string {
	lines := strings.Split(strings.TrimSpace(string(t.b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
