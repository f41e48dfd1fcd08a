package states

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
)

// restartTimeout bounds one restart command; systemd's own default stop
// timeout is 90 s, so a whole target may take a while.
const restartTimeout = 3 * time.Minute

// Restart restarts the device's services so they pick up the new identity:
// systemd units (greengrass-lite.target by default), a command, or nothing.
type Restart struct{}

var _ engine.State = (*Restart)(nil)

func (*Restart) Run(ctx context.Context, r *engine.Run) error {
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
	ctx, cancel := context.WithTimeout(ctx, restartTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
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
