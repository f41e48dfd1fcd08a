package states

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/internal/childenv"
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

// busDialTimeout bounds reaching the system bus: a bus that does not
// answer by then is treated as absent, and systemctl gets its turn.
const busDialTimeout = 30 * time.Second

// JobModeReplace is the systemd job mode of every restart: a job already
// queued for the unit (a start queued at boot) is replaced, not refused.
const JobModeReplace = "replace"

// Restart restarts the device's services so they pick up the new identity:
// systemd units (greengrass-lite.target by default), a command, or nothing.
type Restart struct {
	// Timeout bounds one restart; 0 means restartTimeout.
	Timeout time.Duration
}

var _ engine.State = (*Restart)(nil)

func (s *Restart) Run(ctx context.Context, r *engine.Run) error {
	cfg := r.Config
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = restartTimeout
	}
	switch cfg.RestartStrategy {
	case config.RestartNone:
		r.Log.Info("restart skipped (restartStrategy: none)")
		return nil
	case config.RestartSystemd:
		ur, err := openUnitRestarter(ctx, cfg, timeout, r.Log)
		if err != nil {
			return err
		}
		defer ur.Close()
		return ur.RestartUnits(ctx, &UnitRestartRequest{Units: cfg.RestartUnits, Mode: JobModeReplace, Log: r.Log})
	case config.RestartCommand:
		start := time.Now()
		argv := []string{"/bin/sh", "-c", cfg.RestartCommand}
		if err := runRestartCommand(ctx, argv, timeout, r.Log); err != nil {
			return err
		}
		r.Log.Info("services restarted", "command", strings.Join(argv, " "), "duration", time.Since(start).Round(time.Millisecond))
		return nil
	default:
		return fmt.Errorf("restartStrategy %q is unknown", cfg.RestartStrategy)
	}
}

// UnitRestarter restarts systemd units one after the other, in the order
// given, and stops at the first that does not come back. Its two
// implementations ask systemd through D-Bus, or run systemctl when no
// system bus is reachable.
type UnitRestarter interface {
	RestartUnits(ctx context.Context, req *UnitRestartRequest) error
	Close() error
}

// UnitRestartRequest is one restart of the configured units.
type UnitRestartRequest struct {
	Units []string
	// Mode is the systemd job mode (JobModeReplace).
	Mode string
	Log  *slog.Logger
}

// systemBusAddress is the bus systemd is asked through: "" is the system
// bus (its standard socket, or DBUS_SYSTEM_BUS_ADDRESS as for any D-Bus
// client). Only tests set it, to a bus of their own.
var systemBusAddress = ""

// procSelfCgroup tells which unit this process runs in when no bus can
// say; tests point it at a file of their own.
var procSelfCgroup = "/proc/self/cgroup"

// openUnitRestarter connects to systemd over the system bus, or falls
// back to systemctl (which reaches systemd without the bus) when the bus
// cannot be reached. The log says which path was taken.
func openUnitRestarter(ctx context.Context, cfg *config.Config, timeout time.Duration, log *slog.Logger) (UnitRestarter, error) {
	dctx, cancel := context.WithTimeout(ctx, busDialTimeout)
	defer cancel()
	conn, err := dialSystemd(ctx, dctx)
	if err == nil {
		log.Info("restarting units through D-Bus", "units", strings.Join(cfg.RestartUnits, " "))
		return &busRestarter{conn: conn, timeout: timeout}, nil
	}
	if ctx.Err() != nil {
		return nil, failure.Transient(fmt.Errorf("restart %s: %w", strings.Join(cfg.RestartUnits, " "), ctx.Err()))
	}
	log.Info("no system bus; restarting units with systemctl", "units", strings.Join(cfg.RestartUnits, " "), "systemctl", cfg.SystemctlPath, "error", err.Error())
	return &systemctlRestarter{path: cfg.SystemctlPath, timeout: timeout}, nil
}

// dialSystemd opens go-systemd's pair of connections. ctx bounds their
// life (the state's deadline); dialCtx only the dial and handshake.
func dialSystemd(ctx, dialCtx context.Context) (*sdbus.Conn, error) {
	return sdbus.NewConnection(func() (*dbus.Conn, error) {
		var conn *dbus.Conn
		var err error
		if systemBusAddress == "" {
			conn, err = dbus.SystemBusPrivate(dbus.WithContext(ctx))
		} else {
			conn, err = dbus.Dial(systemBusAddress, dbus.WithContext(ctx))
		}
		if err != nil {
			return nil, err
		}
		// The handshake has no context of its own: close the connection
		// if it outlasts dialCtx, which makes Auth or Hello return.
		stop := context.AfterFunc(dialCtx, func() { _ = conn.Close() })
		defer stop()
		// EXTERNAL with the numeric uid: no user name lookup, which a
		// static binary could not do.
		if err := conn.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			_ = conn.Close()
			return nil, err
		}
		if err := conn.Hello(); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return conn, nil
	})
}

// busRestarter restarts units through systemd's D-Bus API and waits for
// each job's result (JobRemoved).
type busRestarter struct {
	conn    *sdbus.Conn
	timeout time.Duration // bounds the whole RestartUnits
}

var _ UnitRestarter = (*busRestarter)(nil)

func (b *busRestarter) Close() error {
	b.conn.Close()
	return nil
}

func (b *busRestarter) RestartUnits(ctx context.Context, req *UnitRestartRequest) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	self := b.startingUnit(ctx)
	for _, unit := range req.Units {
		// A unit ordered after the one this process runs in, while that
		// one is still starting (fleetprov.service, ordered before
		// greengrass-lite.target), cannot restart before this process
		// exits: waiting for its job would wait for ourselves.
		wait := self == "" || !b.orderedAfter(ctx, unit, self)
		var done chan string
		if wait {
			// Buffered: go-systemd sends the result while holding its
			// lock, so a result nobody reads any more must not block it.
			done = make(chan string, 1)
		}
		start := time.Now()
		if _, err := b.conn.RestartUnitContext(ctx, unit, req.Mode, done); err != nil {
			return busError(unit, err)
		}
		if !wait {
			req.Log.Info("unit restart queued", "unit", unit, "via", "D-Bus", "mode", req.Mode,
				"reason", fmt.Sprintf("%s is ordered after %s, which is still starting: systemd runs the job once this run ends", unit, self))
			continue
		}
		select {
		case result := <-done:
			if result != "done" {
				return jobError(unit, result)
			}
		case <-ctx.Done():
			return failure.Transient(fmt.Errorf("restart %s through D-Bus: no job result after %s: see `systemctl list-jobs` and `journalctl -u %s`", unit, time.Since(start).Round(time.Second), unit))
		}
		req.Log.Info("unit restarted", "unit", unit, "via", "D-Bus", "mode", req.Mode, "duration", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// startingUnit is the unit this process runs in if that unit is still
// starting (a oneshot service in its ExecStart), else "".
func (b *busRestarter) startingUnit(ctx context.Context) string {
	self, err := b.conn.GetUnitNameByPID(ctx, uint32(os.Getpid()))
	if err != nil || self == "" {
		return "" // not in a unit (a login shell's scope has none to wait for)
	}
	p, err := b.conn.GetUnitPropertyContext(ctx, self, "ActiveState")
	if err != nil {
		// Unknown: assume the worst, so that no restart waits on us.
		return self
	}
	if s, ok := p.Value.Value().(string); ok && s != "activating" {
		return ""
	}
	return self
}

// orderedAfter says whether unit is ordered after self (its After= holds
// self), or cannot tell, in which case not waiting is the safe answer.
func (b *busRestarter) orderedAfter(ctx context.Context, unit, self string) bool {
	p, err := b.conn.GetUnitPropertyContext(ctx, unit, "After")
	if err != nil {
		return true
	}
	after, ok := p.Value.Value().([]string)
	return !ok || slices.Contains(after, self)
}

// jobResults explains each job result systemd reports other than "done".
var jobResults = map[string]string{
	"failed":     "the unit did not come back up",
	"timeout":    "the unit's stop or start timed out",
	"canceled":   "another job replaced it before it finished",
	"dependency": "a unit it requires failed",
	"skipped":    "systemd skipped it",
}

func jobError(unit, result string) error {
	why := jobResults[result]
	if why == "" {
		why = "systemd reported no success"
	}
	// A unit that is still stopping or a dependency that was down often
	// comes back on the next try: the engine retries with backoff.
	return failure.Transient(fmt.Errorf("restart %s through D-Bus: job result %q (%s): see `journalctl -u %s`", unit, result, why, unit))
}

// busError classes a refused RestartUnit call: a unit systemd does not
// know, or a caller it does not allow, stays so however often we ask.
func busError(unit string, err error) error {
	var de dbus.Error
	if errors.As(err, &de) {
		switch de.Name {
		case "org.freedesktop.systemd1.NoSuchUnit", "org.freedesktop.systemd1.LoadFailed", "org.freedesktop.DBus.Error.InvalidArgs":
			return fmt.Errorf("restartUnits: systemd cannot load unit %q (%s): fix restartUnits or install the unit", unit, de.Error())
		case "org.freedesktop.DBus.Error.AccessDenied", "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired":
			return fmt.Errorf("restart %s through D-Bus: systemd refused (%s): run fleetprov as root, or allow it with a polkit rule", unit, de.Error())
		}
	}
	return failure.Transient(fmt.Errorf("restart %s through D-Bus: %w", unit, err))
}

// systemctlRestarter runs systemctl restart for all units at once; it is
// what is left when the system bus cannot be reached (systemctl talks to
// systemd over its private socket).
type systemctlRestarter struct {
	path    string
	timeout time.Duration
}

var _ UnitRestarter = (*systemctlRestarter)(nil)

func (c *systemctlRestarter) Close() error { return nil }

func (c *systemctlRestarter) RestartUnits(ctx context.Context, req *UnitRestartRequest) error {
	argv := []string{c.path, "restart", "--job-mode=" + req.Mode}
	// Without a bus there is no asking whether a unit is ordered after
	// the service this process runs in: inside any service, do not wait
	// (systemctl --no-block) rather than risk waiting for ourselves.
	self := ownService()
	if self != "" {
		argv = append(argv, "--no-block")
	}
	argv = append(append(argv, "--"), req.Units...)
	start := time.Now()
	if err := runRestartCommand(ctx, argv, c.timeout, req.Log); err != nil {
		return err
	}
	if self != "" {
		req.Log.Info("unit restarts queued", "units", strings.Join(req.Units, " "), "via", "systemctl", "command", strings.Join(argv, " "),
			"reason", self+" may be what they wait for: systemd runs the jobs once this run ends")
		return nil
	}
	req.Log.Info("units restarted", "units", strings.Join(req.Units, " "), "via", "systemctl", "command", strings.Join(argv, " "), "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// ownService is the service unit this process runs in, from its cgroup
// (".../system.slice/fleetprov.service"), or "" outside a service.
func ownService() string {
	b, err := os.ReadFile(procSelfCgroup)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		// cgroup v2: "0::/system.slice/fleetprov.service"
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			if u := path.Base(rest); strings.HasSuffix(u, ".service") {
				return u
			}
		}
	}
	return ""
}

// runRestartCommand runs argv within timeout, its whole process group
// killed at the end.
func runRestartCommand(ctx context.Context, argv []string, timeout time.Duration, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = childenv.Environ()
	// At the timeout (or a SIGTERM to run) the command's whole process
	// group goes, children included, and Wait stops waiting for output a
	// leftover child still holds.
	procgroup.KillOnCancel(cmd)
	cmd.WaitDelay = restartOutputWait
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) && ctx.Err() == nil {
		// The command exited 0 and left a process holding its output (a
		// daemon it started): the restart itself is done.
		log.Warn("restart command left a process holding its output; not waiting for it", "command", strings.Join(argv, " "))
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
