// Package statescripts runs executables from a directory as a hook.Hook:
// state scripts, named <State>_<Enter|Leave|Error>_<NN>[_desc], as mender
// names them. Enter and Leave scripts run before a state runs and before
// its result is journaled, and may veto the step or ask for it to be
// retried later; Error scripts run when the state fails and cannot change
// anything.
//
// Each script gets the event as one line of JSON on stdin (a hook.Event),
// and FLEETPROV_SCRIPT_STATE, FLEETPROV_SCRIPT_ACTION and
// FLEETPROV_SCRIPT_ATTEMPT in its environment. Its exit status decides:
//
//	0                   proceed
//	ExitRetryLater (21) retry later: the engine backs off and asks again
//	anything else       veto (Enter, Leave): the run stops at the state,
//	                    with the script's last line on stderr as the reason
//
// A script still running at its timeout is killed with every process in
// its process group.
package statescripts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/fleetprov/fleetprov/internal/childenv"
	"github.com/fleetprov/fleetprov/internal/procgroup"
	"github.com/fleetprov/fleetprov/plugins/hook"
)

// ExitRetryLater is the exit status by which an Enter or Leave script asks
// for the step to be tried again later (mender uses the same number).
const ExitRetryLater = 21

// DefaultTimeout bounds one script when Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Action is when a script runs.
type Action string

const (
	Enter Action = "Enter" // before the state runs; may veto or defer
	Leave Action = "Leave" // after it succeeded, before its result is journaled; may veto or defer
	Error Action = "Error" // after it failed; its exit status is logged only
)

// Script is one state script found in the directory.
type Script struct {
	Path   string
	Name   string // file name
	State  string
	Action Action
	Order  int    // NN
	Desc   string // without the leading '_'
}

// Options say where the scripts are and how to run them.
type Options struct {
	Dir string
	// Timeout bounds each script; 0 means DefaultTimeout.
	Timeout time.Duration
	// States are the state names scripts may name. A script naming any
	// other is refused, so that a misspelt name cannot silently never run.
	States []string
	// Logger receives each line a script writes, and Error scripts'
	// failures. nil discards.
	Logger *slog.Logger
}

// Hook runs the state scripts of one directory.
type Hook struct {
	opts    Options
	scripts []Script
}

var _ hook.Hook = (*Hook)(nil)

// killGrace bounds how long a script's output is still read after the
// script exited or was killed: a background process it started may hold
// its stdout or stderr open.
const killGrace = 2 * time.Second

// Parse reads a state script's file name. states are the state names it may
// name; a name may itself hold '_' (a vendor's step), so the longest state
// the file name starts with wins.
func Parse(name string, states []string) (Script, error) {
	notNamed := fmt.Errorf("%s is not named <State>_<Enter|Leave|Error>_<NN>[_description]: rename it, or start its name with '.' to disable it", name)
	state, rest := "", ""
	for _, st := range states {
		if r, ok := strings.CutPrefix(name, st+"_"); ok && len(st) > len(state) {
			state, rest = st, r
		}
	}
	if state == "" {
		first, tail, _ := strings.Cut(name, "_")
		if strings.Count(tail, "_") < 1 {
			return Script{}, notNamed
		}
		hint := ""
		for _, st := range states {
			if strings.EqualFold(st, first) {
				hint = " (did you mean " + st + "?)"
			}
		}
		return Script{}, fmt.Errorf("%s names state %q, which scripts cannot hook%s: use one of %s", name, first, hint, strings.Join(states, ", "))
	}
	action, rest, ok := strings.Cut(rest, "_")
	if !ok {
		return Script{}, notNamed
	}
	order, desc, hasDesc := strings.Cut(rest, "_")
	if hasDesc && desc == "" {
		return Script{}, notNamed
	}
	s := Script{Name: name, State: state, Action: Action(action), Desc: desc}
	switch s.Action {
	case Enter, Leave, Error:
	default:
		return Script{}, fmt.Errorf("%s names action %q: use Enter, Leave or Error", name, action)
	}
	if len(order) != 2 || order[0] < '0' || order[0] > '9' || order[1] < '0' || order[1] > '9' {
		return Script{}, fmt.Errorf("%s has order %q: use two digits, 00 to 99", name, order)
	}
	s.Order, _ = strconv.Atoi(order)
	return s, nil
}

// New reads the directory and checks every script in it: the directory
// and each script must not be writable by every user, and each script must
// parse, name a known state, be a regular file (or a link to one) and be
// executable. Files whose name starts with '.' are ignored. The first
// problem is the error; it names the file and what to do.
func New(o Options) (*Hook, error) {
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	entries, err := os.ReadDir(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("state scripts directory %s: %w", o.Dir, err)
	}
	if fi, err := os.Stat(o.Dir); err == nil && fi.Mode().Perm()&0o002 != 0 {
		return nil, fmt.Errorf("state scripts directory %s is writable by every user, who could add a script run as fleetprov: chmod o-w it", o.Dir)
	}
	h := &Hook{opts: o}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(o.Dir, e.Name())
		s, err := Parse(e.Name(), o.States)
		if err != nil {
			return nil, fmt.Errorf("state script %s: %w", path, err)
		}
		s.Path = path
		fi, err := os.Stat(path)
		switch {
		case err != nil:
			return nil, fmt.Errorf("state script %s: %w", path, err)
		case !fi.Mode().IsRegular():
			return nil, fmt.Errorf("state script %s is not a regular file: put only scripts in %s", path, o.Dir)
		case fi.Mode().Perm()&0o111 == 0:
			return nil, fmt.Errorf("state script %s is not executable: chmod +x it, or start its name with '.' to disable it", path)
		case fi.Mode().Perm()&0o002 != 0:
			return nil, fmt.Errorf("state script %s is writable by every user, who could run code as fleetprov: chmod o-w it", path)
		}
		h.scripts = append(h.scripts, s)
	}
	// Run order: NN, then the name, so two scripts with the same number
	// still run in a stable order.
	slices.SortFunc(h.scripts, func(a, b Script) int {
		if a.Order != b.Order {
			return a.Order - b.Order
		}
		return strings.Compare(a.Name, b.Name)
	})
	return h, nil
}

// Name names the hook in the engine's errors.
func (h *Hook) Name() string { return "state scripts" }

// Scripts lists the scripts in the order they run.
func (h *Hook) Scripts() []Script { return slices.Clone(h.scripts) }

// Notify runs the scripts for the event: Enter scripts for hook.Enter,
// Leave scripts for hook.Leave, Error scripts for hook.Failed. Enter and
// Leave scripts stop at the first that does not exit 0; its answer is the
// hook's. Every Error script runs; their failures are logged and returned
// joined, for the engine to log.
func (h *Hook) Notify(ctx context.Context, req *hook.NotifyRequest) (*hook.NotifyResponse, error) {
	ev := req.Event
	var action Action
	switch ev.Kind {
	case hook.Enter:
		action = Enter
	case hook.Leave:
		action = Leave
	case hook.Failed:
		action = Error
	default:
		return &hook.NotifyResponse{}, nil
	}
	input, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	input = append(input, '\n')
	var errs []error
	for _, s := range h.scripts {
		if s.State != ev.State || s.Action != action {
			continue
		}
		res, err := h.run(ctx, s, ev, input)
		if action == Error {
			if err == nil && res.code != 0 {
				err = fmt.Errorf("%s exited with status %d%s", s.Name, res.code, res.because())
			}
			if err != nil {
				h.opts.Logger.Warn("state script failed", "script", s.Name, "err", err)
				errs = append(errs, err)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		switch res.code {
		case 0:
		case ExitRetryLater:
			return &hook.NotifyResponse{Verdict: hook.RetryLater, Reason: s.Name + " asked to retry later" + res.because()}, nil
		default:
			return &hook.NotifyResponse{Verdict: hook.Veto, Reason: fmt.Sprintf("%s exited with status %d%s", s.Name, res.code, res.because())}, nil
		}
	}
	return &hook.NotifyResponse{}, errors.Join(errs...)
}

type result struct {
	code     int
	lastLine string // the last non-empty line on stderr
}

// maxReason bounds the part of a script's stderr that goes into the run's
// one-line error.
const maxReason = 200

func (r result) because() string {
	if r.lastLine == "" {
		return " (nothing on stderr)"
	}
	// The reason reaches a terminal: no escape sequences, one line.
	line := strings.Map(func(c rune) rune {
		if unicode.IsControl(c) {
			return '?'
		}
		return c
	}, r.lastLine)
	if rs := []rune(line); len(rs) > maxReason {
		line = string(rs[:maxReason]) + "..."
	}
	return ": " + line
}

// run runs one script to its end or its timeout. An error means the script
// could not give an answer: it could not start, was killed by a signal, or
// ran out of time.
func (h *Hook) run(ctx context.Context, s Script, ev hook.Event, input []byte) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, h.opts.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Path)
	cmd.Dir = h.opts.Dir
	cmd.Stdin = bytes.NewReader(input)
	cmd.Env = append(childenv.Environ(),
		"FLEETPROV_SCRIPT_STATE="+s.State,
		"FLEETPROV_SCRIPT_ACTION="+string(s.Action),
		"FLEETPROV_SCRIPT_ATTEMPT="+strconv.Itoa(ev.Attempt),
	)
	// Its own process group, so that at the timeout everything it started
	// is killed with it, not only the script.
	procgroup.KillOnCancel(cmd)
	cmd.WaitDelay = killGrace
	log := h.opts.Logger.With("script", s.Name)
	stdout := &lineLog{log: log, stream: "stdout"}
	stderr := &lineLog{log: log, stream: "stderr"}
	cmd.Stdout, cmd.Stderr = stdout, stderr

	start := time.Now()
	err := cmd.Run()
	stdout.flush()
	stderr.flush()
	res := result{lastLine: stderr.lastLine()}
	log.Debug("state script ran", "duration", time.Since(start).Round(time.Millisecond), "err", err)
	ps := cmd.ProcessState
	switch {
	case ps != nil && ps.Exited():
		// It exited by itself, maybe leaving something running that
		// still held its output (err is then exec.ErrWaitDelay, or the
		// context's error if the timeout came first): its status stands.
		res.code = ps.ExitCode()
		return res, nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return res, fmt.Errorf("%s timed out after %s (stateScriptTimeout) and was killed with its process group", s.Name, h.opts.Timeout)
	case ctx.Err() != nil:
		return res, fmt.Errorf("%s interrupted: %w", s.Name, ctx.Err())
	case ps != nil:
		return res, fmt.Errorf("%s was killed (%s)%s", s.Name, ps, res.because())
	}
	return res, fmt.Errorf("%s could not be run: %w", s.Name, err)
}

// maxLine bounds one logged line and the reason taken from stderr, so a
// script writing megabytes without a newline cannot fill memory.
const maxLine = 4096

// lineLog logs what a script writes, line by line, and keeps the last
// non-empty line.
type lineLog struct {
	log    *slog.Logger
	stream string
	mu     sync.Mutex
	buf    []byte
	last   string
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) > maxLine {
				l.line(l.buf[:maxLine])
				l.buf = l.buf[maxLine:]
			}
			return len(p), nil
		}
		l.line(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

func (l *lineLog) line(b []byte) {
	s := strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
	if s == "" {
		return
	}
	l.last = s
	l.log.Info("state script output", "stream", l.stream, "line", s)
}

func (l *lineLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.line(l.buf)
		l.buf = nil
	}
}

func (l *lineLog) lastLine() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

var _ io.Writer = (*lineLog)(nil)
