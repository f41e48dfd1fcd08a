package statescripts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/plugins/hook"
)

var states = []string{"PrepareKey", "CreateCertificate", "RegisterThing", "Persist", "Restart"}

// script writes an executable shell script named name into dir.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func newHook(t *testing.T, dir string, timeout time.Duration) *Hook {
	t.Helper()
	h, err := New(Options{Dir: dir, Timeout: timeout, States: states})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func notify(t *testing.T, h *Hook, kind hook.Kind, state string) (*hook.NotifyResponse, error) {
	t.Helper()
	return h.Notify(context.Background(), &hook.NotifyRequest{Event: hook.Event{
		Kind: kind, State: state, Attempt: 2, Time: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC),
		Data: map[string]any{"certificateId": "c1", "thingName": "gg_1"},
	}})
}

func TestParse(t *testing.T) {
	good := []struct {
		name string
		want Script
	}{
		{"RegisterThing_Enter_10", Script{Name: "RegisterThing_Enter_10", State: "RegisterThing", Action: Enter, Order: 10}},
		{"Persist_Leave_00_sync-clock.sh", Script{Name: "Persist_Leave_00_sync-clock.sh", State: "Persist", Action: Leave, Desc: "sync-clock.sh"}},
		{"Restart_Error_99_report_to_backend", Script{Name: "Restart_Error_99_report_to_backend", State: "Restart", Action: Error, Order: 99, Desc: "report_to_backend"}},
	}
	for _, g := range good {
		got, err := Parse(g.name, states)
		if err != nil || !reflect.DeepEqual(got, g.want) {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", g.name, got, err, g.want)
		}
	}
	// A vendor's step whose name holds '_', next to one whose name is its
	// prefix: the longest match wins.
	vendor := []string{"Backend", "Backend_Register"}
	for name, want := range map[string]Script{
		"Backend_Register_Leave_10_notify": {Name: "Backend_Register_Leave_10_notify", State: "Backend_Register", Action: Leave, Order: 10, Desc: "notify"},
		"Backend_Enter_20":                 {Name: "Backend_Enter_20", State: "Backend", Action: Enter, Order: 20},
	} {
		if got, err := Parse(name, vendor); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", name, got, err, want)
		}
	}
	all := "PrepareKey, CreateCertificate, RegisterThing, Persist, Restart"
	bad := []struct{ name, want string }{
		{"README", "README is not named <State>_<Enter|Leave|Error>_<NN>[_description]: rename it, or start its name with '.' to disable it"},
		{"Persist_Enter_", `Persist_Enter_ has order "": use two digits, 00 to 99`},
		{"RegisterThing_Enter_10_", "RegisterThing_Enter_10_ is not named <State>_<Enter|Leave|Error>_<NN>[_description]: rename it, or start its name with '.' to disable it"},
		{"Persist", "Persist is not named <State>_<Enter|Leave|Error>_<NN>[_description]: rename it, or start its name with '.' to disable it"},
		{"RegisterThing_Enter", "RegisterThing_Enter is not named <State>_<Enter|Leave|Error>_<NN>[_description]: rename it, or start its name with '.' to disable it"},
		{"RegisterThng_Enter_10", `RegisterThng_Enter_10 names state "RegisterThng", which scripts cannot hook: use one of ` + all},
		{"registerthing_Enter_10", `registerthing_Enter_10 names state "registerthing", which scripts cannot hook (did you mean RegisterThing?): use one of ` + all},
		{"LoadConfig_Enter_10", `LoadConfig_Enter_10 names state "LoadConfig", which scripts cannot hook: use one of ` + all},
		{"Persist_enter_10", `Persist_enter_10 names action "enter": use Enter, Leave or Error`},
		{"Persist_Sync_10", `Persist_Sync_10 names action "Sync": use Enter, Leave or Error`},
		{"Persist_Enter_1", `Persist_Enter_1 has order "1": use two digits, 00 to 99`},
		{"Persist_Enter_100", `Persist_Enter_100 has order "100": use two digits, 00 to 99`},
		{"Persist_Enter_ab_x", `Persist_Enter_ab_x has order "ab": use two digits, 00 to 99`},
	}
	for _, b := range bad {
		_, err := Parse(b.name, states)
		if err == nil || err.Error() != b.want {
			t.Errorf("Parse(%q) error\n got  %v\n want %s", b.name, err, b.want)
		}
	}
}

func TestNewRefusesWhatWouldNeverRun(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
		want    string // {dir} is the directory
	}{
		{"typo in the state", func(t *testing.T, dir string) { script(t, dir, "RegisterThng_Enter_10", "exit 0") },
			`state script {dir}/RegisterThng_Enter_10: RegisterThng_Enter_10 names state "RegisterThng", which scripts cannot hook: use one of PrepareKey, CreateCertificate, RegisterThing, Persist, Restart`},
		{"not executable", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "Persist_Enter_10"), []byte("#!/bin/sh\n"), 0o644)
		}, `state script {dir}/Persist_Enter_10 is not executable: chmod +x it, or start its name with '.' to disable it`},
		{"writable by all", func(t *testing.T, dir string) {
			p := script(t, dir, "Persist_Enter_10", "exit 0")
			os.Chmod(p, 0o777)
		}, `state script {dir}/Persist_Enter_10 is writable by every user, who could run code as fleetprov: chmod o-w it`},
		{"a directory", func(t *testing.T, dir string) { os.Mkdir(filepath.Join(dir, "Persist_Enter_10"), 0o755) },
			`state script {dir}/Persist_Enter_10 is not a regular file: put only scripts in {dir}`},
		{"dangling link", func(t *testing.T, dir string) { os.Symlink("/nonexistent", filepath.Join(dir, "Persist_Enter_10")) },
			`state script {dir}/Persist_Enter_10: stat {dir}/Persist_Enter_10: no such file or directory`},
		{"directory writable by all", func(t *testing.T, dir string) {
			script(t, dir, "Persist_Enter_10", "exit 0")
			os.Chmod(dir, 0o777)
		}, `state scripts directory {dir} is writable by every user, who could add a script run as fleetprov: chmod o-w it`},
		{"missing directory", func(t *testing.T, dir string) { os.Remove(dir) },
			`state scripts directory {dir}: open {dir}: no such file or directory`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.prepare(t, dir)
			_, err := New(Options{Dir: dir, States: states})
			if want := strings.ReplaceAll(tt.want, "{dir}", dir); err == nil || err.Error() != want {
				t.Fatalf("error\n got  %v\n want %s", err, want)
			}
		})
	}
}

func TestScriptsRunInOrderWithTheEventOnStdin(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	// Each script appends its name to a log and saves its stdin and
	// environment. Files starting with '.' are not scripts.
	rec := `name=$(basename "$0"); echo "$name" >> ` + out + `/order; cat > ` + out + `/"$name".json; ` +
		`echo "$FLEETPROV_SCRIPT_STATE $FLEETPROV_SCRIPT_ACTION $FLEETPROV_SCRIPT_ATTEMPT" > ` + out + `/"$name".env`
	for _, n := range []string{"RegisterThing_Enter_20_b", "RegisterThing_Enter_05", "RegisterThing_Enter_20_a", "RegisterThing_Leave_01", "Persist_Enter_01"} {
		script(t, dir, n, rec)
	}
	script(t, dir, ".RegisterThing_Enter_00_disabled", "echo disabled >> "+out+"/order")
	h := newHook(t, dir, time.Minute)
	var names []string
	for _, s := range h.Scripts() {
		names = append(names, s.Name)
	}
	if want := "Persist_Enter_01,RegisterThing_Leave_01,RegisterThing_Enter_05,RegisterThing_Enter_20_a,RegisterThing_Enter_20_b"; strings.Join(names, ",") != want {
		t.Errorf("scripts %v, want %s", names, want)
	}

	resp, err := notify(t, h, hook.Enter, "RegisterThing")
	if err != nil || resp.Verdict != hook.Proceed {
		t.Fatalf("Notify = %+v, %v", resp, err)
	}
	order, _ := os.ReadFile(filepath.Join(out, "order"))
	if got, want := string(order), "RegisterThing_Enter_05\nRegisterThing_Enter_20_a\nRegisterThing_Enter_20_b\n"; got != want {
		t.Errorf("ran\n%s\nwant\n%s", got, want)
	}
	raw, err := os.ReadFile(filepath.Join(out, "RegisterThing_Enter_20_a.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(raw, []byte("}\n")) || bytes.Count(raw, []byte("\n")) != 1 {
		t.Errorf("stdin is not one line of JSON: %q", raw)
	}
	var ev hook.Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatalf("stdin is not an event: %v: %s", err, raw)
	}
	want := hook.Event{Kind: hook.Enter, State: "RegisterThing", Attempt: 2, Time: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC),
		Data: map[string]any{"certificateId": "c1", "thingName": "gg_1"}}
	if !reflect.DeepEqual(ev, want) {
		t.Errorf("stdin event %+v, want %+v", ev, want)
	}
	env, _ := os.ReadFile(filepath.Join(out, "RegisterThing_Enter_05.env"))
	if string(env) != "RegisterThing Enter 2\n" {
		t.Errorf("environment %q", env)
	}

	// Leave runs only Leave scripts; retrying and done run none.
	os.Remove(filepath.Join(out, "order"))
	notify(t, h, hook.Leave, "RegisterThing")
	notify(t, h, hook.Retrying, "RegisterThing")
	notify(t, h, hook.Done, "Done")
	if order, _ := os.ReadFile(filepath.Join(out, "order")); string(order) != "RegisterThing_Leave_01\n" {
		t.Errorf("ran %q, want only RegisterThing_Leave_01", order)
	}
}

func TestVetoAndRetryLater(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	script(t, dir, "Persist_Enter_10_check", `echo "checking" >&2; echo "battery at 12%, need 30%" >&2; echo "   " >&2; exit 3`)
	script(t, dir, "Persist_Enter_20_after", "touch "+out+"/after-ran")
	script(t, dir, "Persist_Leave_10_silent", "exit 1")
	script(t, dir, "Restart_Enter_10_clock", `echo "clock not synchronised" >&2; exit 21`)
	script(t, dir, "Restart_Leave_10_noisy", `printf 'red \033[31malert\033[0m\n' >&2; exit 4`)
	script(t, dir, "Restart_Error_10_long", `head -c 5000 /dev/zero | tr '\0' x >&2; exit 4`)
	h := newHook(t, dir, time.Minute)

	resp, err := notify(t, h, hook.Enter, "Persist")
	if err != nil || resp.Verdict != hook.Veto || resp.Reason != "Persist_Enter_10_check exited with status 3: battery at 12%, need 30%" {
		t.Errorf("veto: %+v, %v", resp, err)
	}
	if _, err := os.Stat(filepath.Join(out, "after-ran")); err == nil {
		t.Errorf("a script ran after the one that vetoed")
	}
	resp, err = notify(t, h, hook.Leave, "Persist")
	if err != nil || resp.Verdict != hook.Veto || resp.Reason != "Persist_Leave_10_silent exited with status 1 (nothing on stderr)" {
		t.Errorf("silent veto: %+v, %v", resp, err)
	}
	resp, err = notify(t, h, hook.Enter, "Restart")
	if err != nil || resp.Verdict != hook.RetryLater || resp.Reason != "Restart_Enter_10_clock asked to retry later: clock not synchronised" {
		t.Errorf("retry later: %+v, %v", resp, err)
	}
	// What reaches the user's terminal: no escape sequences, not a page.
	resp, err = notify(t, h, hook.Leave, "Restart")
	if err != nil || resp.Reason != "Restart_Leave_10_noisy exited with status 4: red ?[31malert?[0m" {
		t.Errorf("escapes: %+v, %v", resp, err)
	}
	_, err = notify(t, h, hook.Failed, "Restart")
	if want := "Restart_Error_10_long exited with status 4: " + strings.Repeat("x", maxReason) + "..."; err == nil || err.Error() != want {
		t.Errorf("long line: %v", err)
	}
}

func TestRetryLaterThenProceed(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	// Asks to retry twice, then lets the step go on.
	script(t, dir, "Persist_Enter_10_wait", `n=$(cat `+out+`/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > `+out+`/n; [ $n -ge 3 ] && exit 0; echo "try $n: not yet" >&2; exit 21`)
	h := newHook(t, dir, time.Minute)
	var got []string
	for range 3 {
		resp, err := notify(t, h, hook.Enter, "Persist")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(resp.Verdict)+"|"+resp.Reason)
	}
	want := []string{"retry-later|Persist_Enter_10_wait asked to retry later: try 1: not yet", "retry-later|Persist_Enter_10_wait asked to retry later: try 2: not yet", "|"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("answers %q, want %q", got, want)
	}
}

func TestErrorScriptsAllRunAndCannotVeto(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	script(t, dir, "RegisterThing_Error_10", `cat > `+out+`/failed.json; echo "could not report" >&2; exit 7`)
	script(t, dir, "RegisterThing_Error_20", "touch "+out+"/second-ran")
	var logs bytes.Buffer
	h, err := New(Options{Dir: dir, States: states, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.Notify(context.Background(), &hook.NotifyRequest{Event: hook.Event{Kind: hook.Failed, State: "RegisterThing", Error: "403 AccessDenied"}})
	if resp == nil || resp.Verdict != hook.Proceed {
		t.Errorf("Error scripts answered %+v", resp)
	}
	if err == nil || err.Error() != "RegisterThing_Error_10 exited with status 7: could not report" {
		t.Errorf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "second-ran")); err != nil {
		t.Errorf("the second Error script did not run after the first failed")
	}
	raw, _ := os.ReadFile(filepath.Join(out, "failed.json"))
	if !strings.Contains(string(raw), `"kind":"failed"`) || !strings.Contains(string(raw), `"error":"403 AccessDenied"`) {
		t.Errorf("Error script's stdin: %s", raw)
	}
	if !strings.Contains(logs.String(), "script=RegisterThing_Error_10 stream=stderr line=\"could not report\"") {
		t.Errorf("script output not logged:\n%s", logs.String())
	}
}

// alive reports whether pid is a process that has not exited (a zombie
// waiting to be reaped counts as exited).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) STATE ...: comm may hold spaces, so look after the last ')'.
	rest := stat[bytes.LastIndexByte(stat, ')')+1:]
	return !bytes.HasPrefix(bytes.TrimSpace(rest), []byte("Z"))
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestTimeoutKillsTheScriptAndItsChildren(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	// A child in the background and the script itself both sleep far past
	// the timeout; the child holds the script's stderr open.
	script(t, dir, "Persist_Enter_10_hang", `sleep 600 & echo $! > `+out+`/child; echo $$ > `+out+`/script; echo "waiting for the modem" >&2; sleep 600`)
	h := newHook(t, dir, time.Second)
	start := time.Now()
	resp, err := notify(t, h, hook.Enter, "Persist")
	took := time.Since(start)
	if resp != nil || err == nil || err.Error() != "Persist_Enter_10_hang timed out after 1s (stateScriptTimeout) and was killed with its process group" {
		t.Fatalf("Notify = %+v, %v", resp, err)
	}
	if took > 60*time.Second {
		t.Errorf("Notify took %s after a 1s timeout", took)
	}
	for _, f := range []string{"script", "child"} {
		pid := readPID(t, filepath.Join(out, f))
		deadline := time.Now().Add(60 * time.Second)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("the %s (pid %d) outlived the timeout", f, pid)
		}
	}
}

func TestScriptThatExitsLeavingAChildIsNotATimeout(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	// The script exits at once; what it left running keeps its stderr.
	script(t, dir, "Persist_Enter_10_daemon", `sleep 30 & echo $! > `+out+`/child; exit 0`)
	h := newHook(t, dir, time.Minute)
	resp, err := notify(t, h, hook.Enter, "Persist")
	if err != nil || resp.Verdict != hook.Proceed {
		t.Fatalf("Notify = %+v, %v", resp, err)
	}
	syscall.Kill(readPID(t, filepath.Join(out, "child")), syscall.SIGKILL)
}

func TestScriptThatCannotRun(t *testing.T) {
	dir := t.TempDir()
	// No interpreter line: the kernel cannot execute it.
	if err := os.WriteFile(filepath.Join(dir, "Persist_Enter_10"), []byte("exit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	script(t, dir, "Persist_Leave_10", "kill -SEGV $$")
	h := newHook(t, dir, time.Minute)
	_, err := notify(t, h, hook.Enter, "Persist")
	if err == nil || !strings.HasPrefix(err.Error(), "Persist_Enter_10 could not be run: ") || !strings.Contains(err.Error(), "exec format error") {
		t.Errorf("err = %v", err)
	}
	_, err = notify(t, h, hook.Leave, "Persist")
	if err == nil || err.Error() != "Persist_Leave_10 was killed (signal: segmentation fault) (nothing on stderr)" {
		t.Errorf("err = %v", err)
	}
}

func TestInterruptedRunKillsTheScript(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	script(t, dir, "Persist_Enter_10_hang", `echo $$ > `+out+`/script; exec sleep 600`)
	h := newHook(t, dir, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := os.Stat(filepath.Join(out, "script")); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	_, err := h.Notify(ctx, &hook.NotifyRequest{Event: hook.Event{Kind: hook.Enter, State: "Persist"}})
	if err == nil || !errors.Is(err, context.Canceled) || err.Error() != "Persist_Enter_10_hang interrupted: context canceled" {
		t.Fatalf("err = %v", err)
	}
}

// BenchmarkEnterOneScript is the cost a state script adds to a step: one
// fork and exec of /bin/sh, the event on stdin, its exit status read.
func BenchmarkEnterOneScript(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Persist_Enter_10"), []byte("#!/bin/sh\ncat >/dev/null\n"), 0o755); err != nil {
		b.Fatal(err)
	}
	h, err := New(Options{Dir: dir, States: states})
	if err != nil {
		b.Fatal(err)
	}
	req := &hook.NotifyRequest{Event: hook.Event{Kind: hook.Enter, State: "Persist", Data: map[string]any{"thingName": "gg_1"}}}
	for b.Loop() {
		if resp, err := h.Notify(context.Background(), req); err != nil || resp.Verdict != hook.Proceed {
			b.Fatal(resp, err)
		}
	}
}
