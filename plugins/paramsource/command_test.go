package paramsource

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// script writes an executable shell script and returns its path.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := writeFile(t, filepath.Join(dir, name), "#!/bin/sh\n"+body+"\n")
	if err := chmod(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCommandSource(t *testing.T) {
	dir := t.TempDir()
	ok := script(t, dir, "serial", `printf '  SN-77  \nsecond line\n'`)
	fails := script(t, dir, "fails", "echo probing EEPROM >&2\necho 'eeprom: no such device' >&2\nexit 3")
	silentFail := script(t, dir, "silent-fail", "exit 1")
	nothing := script(t, dir, "nothing", "true")
	blank := script(t, dir, "blank", "echo; echo SN-1")
	hangs := script(t, dir, "hangs", "echo waiting for the EEPROM >&2\nexec sleep 30")
	// A child that outlives its parent keeps stdout open: the timeout must
	// kill it too, or the wait would last as long as the child.
	childPID := filepath.Join(dir, "child.pid")
	hangsChild := script(t, dir, "hangs-child", "sleep 30 &\necho $! > "+childPID+"\necho started a helper >&2\nwait")
	notExec := writeFile(t, filepath.Join(dir, "not-executable"), "#!/bin/sh\necho x\n")

	long := "60s" // generous: only a stuck command would reach it
	cases := []struct {
		name    string
		value   map[string]any
		want    string
		fails   bool
		maxWait time.Duration
	}{
		{name: "first line trimmed", value: map[string]any{"command": []any{ok}, "timeout": long}, want: "SN-77"},
		{name: "arguments without a shell", value: map[string]any{"command": []any{"printf", "%s-%s", "a b", "$HOME"}, "timeout": long}, want: "a b-$HOME"},
		{name: "a single program as a string", value: map[string]any{"command": ok, "timeout": long}, want: "SN-77"},
		{name: "missing program", value: map[string]any{"command": []any{filepath.Join(dir, "vendor-serial")}}, fails: true,
			want: "templateParams.Serial (source command): command " + filepath.Join(dir, "vendor-serial") + " not found: install it or fix command"},
		{name: "missing program on PATH", value: map[string]any{"command": []any{"fleetprov-no-such-program", "--short"}}, fails: true,
			want: "templateParams.Serial (source command): command fleetprov-no-such-program not found: install it or fix command"},
		{name: "not executable", value: map[string]any{"command": []any{notExec}}, fails: true,
			want: "templateParams.Serial (source command): command " + notExec + " cannot be run (permission denied): make it executable"},
		{name: "non-zero exit, last stderr line", value: map[string]any{"command": []any{fails, "--short"}, "timeout": long}, fails: true,
			want: "templateParams.Serial (source command): command " + fails + " --short exited with status 3: eeprom: no such device"},
		{name: "non-zero exit, no stderr", value: map[string]any{"command": []any{silentFail}, "timeout": long}, fails: true,
			want: "templateParams.Serial (source command): command " + silentFail + " exited with status 1"},
		{name: "printed nothing", value: map[string]any{"command": []any{nothing}, "timeout": long}, fails: true,
			want: "templateParams.Serial (source command): command " + nothing + " printed nothing"},
		{name: "blank first line", value: map[string]any{"command": []any{blank}, "timeout": long}, fails: true,
			want: "templateParams.Serial (source command): the first line command " + blank + " printed is empty"},
		{name: "timed out", value: map[string]any{"command": []any{hangs}, "timeout": "2s"}, fails: true, maxWait: 20 * time.Second,
			want: "templateParams.Serial (source command): command " + hangs + " did not finish within 2s (raise timeout if it needs longer): waiting for the EEPROM"},
		{name: "timed out with a child holding stdout", value: map[string]any{"command": []any{hangsChild}, "timeout": "2s"}, fails: true, maxWait: 20 * time.Second,
			want: "templateParams.Serial (source command): command " + hangsChild + " did not finish within 2s (raise timeout if it needs longer): started a helper"},
	}
	// The group returns once all its parallel cases have.
	t.Run("group", func(t *testing.T) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				c.value["source"] = "command"
				start := time.Now()
				got, err := derive(t, nil, c.value)
				if c.maxWait > 0 {
					// The commands sleep 30 s: returning well before proves
					// they were killed, not waited for.
					if d := time.Since(start); d > c.maxWait {
						t.Errorf("took %s: the timeout did not stop the command", d)
					}
				}
				if c.fails {
					if err == nil || err.Error() != c.want {
						t.Errorf("got %q, %v\nwant error %s", got, err, c.want)
					}
					return
				}
				if err != nil || got != c.want {
					t.Errorf("got %q, %v; want %q", got, err, c.want)
				}
			})
		}
	})
	t.Run("the timeout killed the child too", func(t *testing.T) {
		b, err := os.ReadFile(childPID)
		if err != nil {
			t.Fatal(err)
		}
		stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/stat")
		if err == nil && !strings.Contains(string(stat), ") Z ") {
			t.Errorf("the command's child %s still runs: %s", strings.TrimSpace(string(b)), stat)
		}
	})
}
