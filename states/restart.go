package states

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/internal/procgroup"
	"github.com/fleetprov/fleetprov/internal/syncbuf"
)

// restartTimeout bounds one restart command; systemd's own default stop
// timeout is 90 s, so a whole target may take a while.
const restartTimeout = 3 * time.Minute

// restartOutputWait is how long a restart command's output may stay open
// after the command itself exited: a command that starts a daemon often
// leaves it holding the output, and the restart is done all the same.
const restartOutputWait = 5 * time.Second

// Restart restarts the device's services so they pick up the new identity:
// systemd units (greengrass-lite.target by default), a command, or nothing.
type Restart struct {
	// Timeout bounds one restart command; 0 means restartTimeout.
	Timeout time.Duration
}

var _ engine.State = (*Restart)(nil)

func (s *Restart) Run(ctx context.Context, r *engine.Run) error {
	cfg := r.Config
	var argv []string
	switch cfg.RestartStrategy {
	case config.RestartNone:
		r.Log.Info("restart skipped (restartStrategy: none)")
		return nil
	case config.RestartSystemd:
		argv = append([]string{cfg.SystemctlPath, "restart", "--"}, cfg.RestartUnits...)
	case config.RestartCommand:
		argv = []string{"/bin/sh", "-c", cfg.RestartCommand}
	default:
		return fmt.Errorf("restartStrategy %q is unknown", cfg.RestartStrategy)
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = restartTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// At the timeout (or a SIGTERM to run) the command's whole process
	// group goes, children included, and Wait stops waiting for output a
	// leftover child still holds.
	procgroup.KillOnCancel(cmd)
	cmd.WaitDelay = restartOutputWait
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) && ctx.Err() == nil {
		// The command exited 0 and left a process holding its output (a
		// daemon it started): the restart itself is done.
		r.Log.Warn("restart command left a process holding its output; not waiting for it", "command", strings.Join(argv, " "))
		err = nil
	}
	if ctx.Err() == context.DeadlineExceeded && err != nil {
		err = fmt.Errorf("%w after %s (killed with its children)", err, timeout)
	}
	if err != nil {
		// A service manager that is busy or a unit that is still stopping
		// often succeeds a moment later: retry within the deadline.
		return failure.Transient(fmt.Errorf("restart %q: %w: %s", strings.Join(argv, " "), err, lastLine(out.String())))
	}
	r.Log.Info("services restarted", "command", strings.Join(argv, " "), "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
