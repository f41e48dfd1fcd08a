package states

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/failure"
)

const noRestart = `restartStrategy: "none" #[Nothing to restart next to the emulator]`

// recordedCalls reads the stand-in systemctl's log: one argv per call.
func recordedCalls(t *testing.T, log string) [][]string {
	t.Helper()
	b, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var calls [][]string
	var cur []string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "--end" {
			calls = append(calls, cur)
			cur = nil
			continue
		}
		cur = append(cur, line)
	}
	return calls
}

func TestRestartSystemd(t *testing.T) {
	tests := []struct {
		name   string
		config string // replaces restartStrategy: none in config.yaml
		want   []string
	}{
		{
			name:   "default units",
			config: `restartStrategy: "systemd"`,
			want:   []string{"restart", "--job-mode=replace", "--", "greengrass-lite.target"},
		},
		{
			name: "custom units",
			config: `restartStrategy: systemd
      restartUnits:
        - ggl.core.iotcored.service
        - ggl.core.tesd.service`,
			want: []string{"restart", "--job-mode=replace", "--", "ggl.core.iotcored.service", "ggl.core.tesd.service"},
		},
		{
			// A unit name that looks like an option is still a unit:
			// the "--" keeps systemctl from reading it as a flag.
			name:   "unit list as one string",
			config: `restartUnits: "greengrass-lite.target, -odd.service"`,
			want:   []string{"restart", "--job-mode=replace", "--", "greengrass-lite.target", "-odd.service"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			script, log := recordedSystemctl(t, 0, "")
			d := newDevice(t, replaceLine(t, noRestart, tc.config+"\n      systemctlPath: "+script))
			if err := (&Restart{}).Run(context.Background(), d.run(true)); err != nil {
				t.Fatalf("Restart: %v", err)
			}
			want := [][]string{append([]string{script}, tc.want...)}
			if got := recordedCalls(t, log); !reflect.DeepEqual(got, want) {
				t.Errorf("systemctl calls = %q, want %q", got, want)
			}
		})
	}
}

func TestRestartCommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "restarted")
	// Shell syntax (a pipe, a redirection, a variable) works only if the
	// command is run by /bin/sh -c.
	cmd := `echo "ggl restarted by $0" | tr a-z A-Z > ` + out
	d := newDevice(t, replaceLine(t, noRestart, "restartStrategy: command\n      restartCommand: '"+cmd+"'"))
	if err := (&Restart{}).Run(context.Background(), d.run(true)); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if got, want := string(readFile(t, out)), "GGL RESTARTED BY /BIN/SH\n"; got != want {
		t.Errorf("the command wrote %q, want %q", got, want)
	}
}

func TestRestartNone(t *testing.T) {
	script, log := recordedSystemctl(t, 0, "")
	d := newDevice(t, replaceLine(t, noRestart, noRestart+"\n      systemctlPath: "+script))
	if d.cfg.RestartStrategy != "none" {
		t.Fatalf("restartStrategy = %q, want none", d.cfg.RestartStrategy)
	}
	if err := (&Restart{}).Run(context.Background(), d.run(true)); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if calls := recordedCalls(t, log); calls != nil {
		t.Errorf("restartStrategy none ran systemctl: %q", calls)
	}
}

// A failed restart is worth retrying (systemd busy, a unit still
// stopping), and the user sees why it failed: the command's last line.
func TestRestartFailureIsTransient(t *testing.T) {
	t.Run("systemd", func(t *testing.T) {
		script, log := recordedSystemctl(t, 1,
			`echo "Warning: greengrass-lite.target changed on disk." >&2
echo "Job for greengrass-lite.target failed because the control process exited with error code." >&2`)
		d := newDevice(t, replaceLine(t, noRestart, `restartStrategy: "systemd"`+"\n      systemctlPath: "+script))
		err := (&Restart{}).Run(context.Background(), d.run(true))
		want := `restart "` + script + ` restart --job-mode=replace -- greengrass-lite.target": exit status 1: ` +
			`Job for greengrass-lite.target failed because the control process exited with error code.`
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v\nwant %s", err, want)
		}
		if !failure.IsTransient(err) {
			t.Error("a failed systemctl is not transient")
		}
		if n := len(recordedCalls(t, log)); n != 1 {
			t.Errorf("systemctl ran %d times, want once (the engine retries, not the state)", n)
		}
	})

	t.Run("command", func(t *testing.T) {
		cmd := `echo stopping; echo restart.sh: ggl.core.iotcored still running >&2; exit 3`
		d := newDevice(t, replaceLine(t, noRestart, "restartStrategy: command\n      restartCommand: '"+cmd+"'"))
		err := (&Restart{}).Run(context.Background(), d.run(true))
		want := `restart "/bin/sh -c ` + cmd + `": exit status 3: restart.sh: ggl.core.iotcored still running`
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v\nwant %s", err, want)
		}
		if !failure.IsTransient(err) {
			t.Error("a failed restart command is not transient")
		}
	})

	t.Run("systemctl missing", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "systemctl")
		d := newDevice(t, replaceLine(t, noRestart, `restartStrategy: "systemd"`+"\n      systemctlPath: "+missing))
		err := (&Restart{}).Run(context.Background(), d.run(true))
		if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), `restart "`+missing+` restart --job-mode=replace -- greengrass-lite.target": `) {
			t.Fatalf("err = %v, want one naming the command and saying it does not exist", err)
		}
	})
}

func TestRestartUnknownStrategy(t *testing.T) {
	d := newDevice(t, nil)
	d.cfg.RestartStrategy = "reboot" // config.Load refuses it; the state must too
	err := (&Restart{}).Run(context.Background(), d.run(true))
	if err == nil || err.Error() != `restartStrategy "reboot" is unknown` {
		t.Fatalf("err = %v", err)
	}
	if failure.IsTransient(err) {
		t.Error("an unknown strategy is retried")
	}
}

func TestRestartHonoursCancel(t *testing.T) {
	d := newDevice(t, replaceLine(t, noRestart, "restartStrategy: command\n      restartCommand: 'sleep 60'"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := (&Restart{}).Run(ctx, d.run(true)); err == nil {
		t.Fatal("Restart ran a command under a cancelled context")
	}
}

// A restart command that hangs, with a child of its own, is killed with
// the child at the timeout; the run does not wait on the child's hold of
// the output.
func TestRestartTimeoutKillsTheGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	cmd := "sleep 600 & echo $! > " + pidFile + "; sleep 600"
	d := newDevice(t, replaceLine(t, noRestart, "restartStrategy: command\n      restartCommand: '"+cmd+"'"))
	start := time.Now()
	err := (&Restart{Timeout: time.Second}).Run(context.Background(), d.run(true))
	if err == nil || !strings.Contains(err.Error(), "after 1s (killed with its children)") || !failure.IsTransient(err) {
		t.Fatalf("err = %v, want a transient error saying it was killed after 1s", err)
	}
	// Loose: the kill is at 1 s; only waiting for the children takes minutes.
	if d := time.Since(start); d > time.Minute {
		t.Errorf("Restart returned after %s", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the command's child %d outlived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A command that exits 0 after starting a daemon that keeps its output
// open has restarted the services: Restart succeeds without waiting for
// the daemon.
func TestRestartCommandLeavingADaemon(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "daemon.pid")
	cmd := "sleep 600 & echo $! > " + pidFile + "; exit 0"
	d := newDevice(t, replaceLine(t, noRestart, "restartStrategy: command\n      restartCommand: '"+cmd+"'"))
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	start := time.Now()
	if err := (&Restart{Timeout: 2 * time.Minute}).Run(context.Background(), d.run(true)); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if d := time.Since(start); d > time.Minute {
		t.Errorf("Restart waited %s for the daemon's output", d)
	}
}
