package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
	"github.com/fleetprov/fleetprov/internal/logjournal/journaltest"
)

// The steps of a run, each of which must be said exactly once.
var runSteps = []string{"LoadConfig", "DeriveParams", "PrepareKey", "CreateCertificate", "RegisterThing", "Persist", "Restart"}

type cliOutput struct {
	stdout, stderr string
	code           int
}

func (o cliOutput) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", o.code, o.stdout, o.stderr)
}

// runCLI runs the test binary as fleetprov with stdout and stderr going to
// files (not terminals); stderrEnv may add variables that depend on the
// stderr file (systemd's JOURNAL_STREAM).
func runCLI(t *testing.T, env []string, stderrEnv func(*os.File) []string, args ...string) cliOutput {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*cloudtest.WaitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Env = append(withoutOutputVars(os.Environ()), envBeCLI+"=1")
	cmd.Env = append(cmd.Env, env...)
	if stderrEnv != nil {
		cmd.Env = append(cmd.Env, stderrEnv(stderr)...)
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	out := cliOutput{code: cmd.ProcessState.ExitCode()}
	b, _ := os.ReadFile(stdout.Name())
	out.stdout = string(b)
	b, _ = os.ReadFile(stderr.Name())
	out.stderr = string(b)
	return out
}

// withoutOutputVars drops what would change the output's defaults in the
// environment the tests run in (CI under systemd, a developer's seam).
func withoutOutputVars(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "JOURNAL_STREAM=") && !strings.HasPrefix(kv, envTerminal+"=") && !strings.HasPrefix(kv, envJournalSocket+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// journalStream is JOURNAL_STREAM as systemd sets it for a service whose
// stderr is f.
func journalStream(f *os.File) []string {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		panic(err)
	}
	return []string{fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino)}
}

// lines is the non-empty lines of both streams.
func (o cliOutput) lines() []string {
	var out []string
	for _, l := range strings.Split(o.stdout+o.stderr, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

func countLines(lines []string, re string) int {
	rx := regexp.MustCompile(re)
	n := 0
	for _, l := range lines {
		if rx.MatchString(l) {
			n++
		}
	}
	return n
}

// eachStepOnce fails unless every step is named on exactly one line of
// the output.
func eachStepOnce(t *testing.T, out cliOutput) {
	t.Helper()
	lines := out.lines()
	for _, s := range runSteps {
		if n := countLines(lines, `\b`+s+`\b`); n != 1 {
			t.Errorf("step %s is said on %d lines, want 1\n%s", s, n, out)
		}
	}
}

func TestTerminalRunPrintsEachStepOnce(t *testing.T) {
	dir, _ := cloudtest.Start(t, cloudsim.Options{}, nil)
	out := runCLI(t, []string{envTerminal + "=1"}, nil, "run", "--config", filepath.Join(dir, "config.yaml"))
	if out.code != 0 {
		t.Fatalf("run failed:\n%s", out)
	}
	eachStepOnce(t, out)
	for _, s := range runSteps {
		if !regexp.MustCompile(`(?m)^  ok    ` + s + ` +[0-9]`).MatchString(out.stdout) {
			t.Errorf("no progress line for %s on stdout:\n%s", s, out)
		}
	}
	// Progress lines only: nothing on stderr, not even the details.
	if out.stderr != "" {
		t.Errorf("stderr on a terminal, want nothing:\n%s", out)
	}
	if n := countLines(out.lines(), `provisioned in .*: thing gg_`); n != 1 {
		t.Errorf("%d lines say the run is done, want 1:\n%s", n, out)
	}
}

// A pipe or a file (CI): progress lines on stdout, the details once on
// stderr as text records, and no record repeating a progress line.
func TestPipedRunPrintsEachStepOnce(t *testing.T) {
	dir, _ := cloudtest.Start(t, cloudsim.Options{}, nil)
	out := runCLI(t, nil, nil, "run", "--config", filepath.Join(dir, "config.yaml"))
	if out.code != 0 {
		t.Fatalf("run failed:\n%s", out)
	}
	eachStepOnce(t, out)
	for _, want := range []string{`level=INFO msg="connecting to AWS IoT" endpoint=`, `level=INFO msg="certificate created"`,
		`level=INFO msg="thing registered"`, `level=INFO msg="new certificate verified"`, `level=INFO msg="Process Complete, Your device is now provisioned"`} {
		if n := strings.Count(out.stderr, want); n != 1 {
			t.Errorf("stderr holds %q %d times, want 1:\n%s", want, n, out)
		}
	}
	if strings.Contains(out.stderr, "state done") {
		t.Errorf("stderr repeats the progress lines as records:\n%s", out)
	}
}

// A run that fails says its cause once, first, on one short line; status
// says it once too.
func TestFailingRunSaysTheCauseOnceFirst(t *testing.T) {
	fault, err := cloudsim.ParseFault("RegisterThing:reject=403/AccessDenied")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := cloudtest.Start(t, cloudsim.Options{Faults: []cloudsim.Fault{fault}}, nil)
	cfg := filepath.Join(dir, "config.yaml")
	out := runCLI(t, []string{envTerminal + "=1"}, nil, "run", "--config", cfg)
	if out.code != 1 {
		t.Fatalf("run: want exit 1:\n%s", out)
	}
	if n := countLines(out.lines(), `AccessDenied`); n != 1 {
		t.Errorf("the cause is said on %d lines, want 1:\n%s", n, out)
	}
	last := strings.Split(strings.TrimSpace(out.stderr), "\n")
	if len(last) != 1 || !regexp.MustCompile(`^fleetprov: RegisterThing: RegisterThing rejected: statusCode=403 errorCode="AccessDenied"`).MatchString(last[0]) {
		t.Errorf("stderr is not one line starting with the cause:\n%s", out)
	}
	if n := len(last[0]); n > 200 {
		t.Errorf("the error line is %d characters long:\n%s", n, last[0])
	}
	if !strings.Contains(out.stdout, "  FAIL  RegisterThing") {
		t.Errorf("no FAIL progress line:\n%s", out)
	}

	st := runCLI(t, nil, nil, "status", "--config", cfg)
	if st.code != 0 {
		t.Fatalf("status:\n%s", st)
	}
	if n := countLines(st.lines(), `AccessDenied`); n != 1 {
		t.Errorf("status says the cause on %d lines, want 1:\n%s", n, st)
	}
	if !regexp.MustCompile(`(?m)^state: +Failed in RegisterThing$`).MatchString(st.stdout) ||
		!regexp.MustCompile(`(?m)^error: +RegisterThing rejected: statusCode=403 errorCode="AccessDenied"`).MatchString(st.stdout) {
		t.Errorf("status does not name the failed state and its cause:\n%s", st)
	}

	// Logged as text, the failure is one record, with no line after it.
	// (A new device: a second run would resume saying why the last one
	// failed, another event.)
	dir, _ = cloudtest.Start(t, cloudsim.Options{Faults: []cloudsim.Fault{fault}}, nil)
	out = runCLI(t, nil, nil, "run", "--config", filepath.Join(dir, "config.yaml"), "--log-format", "text")
	if out.code != 1 {
		t.Fatalf("run: want exit 1:\n%s", out)
	}
	if n := countLines(out.lines(), `AccessDenied`); n != 1 {
		t.Errorf("logged as text, the cause is said on %d lines, want 1:\n%s", n, out)
	}
	if !regexp.MustCompile(`(?m)^time=\S+ level=ERROR msg="state failed" state=RegisterThing duration=\S+ err="RegisterThing rejected: statusCode=403 errorCode=\\"AccessDenied\\"`).MatchString(out.stderr) {
		t.Errorf("no ERROR record with the cause first:\n%s", out)
	}
}

// An explicit --log-format wins over the terminal: records, no progress.
func TestExplicitFormatReplacesProgress(t *testing.T) {
	dir, _ := cloudtest.Start(t, cloudsim.Options{}, nil)
	out := runCLI(t, []string{envTerminal + "=1"}, nil, "run", "--config", filepath.Join(dir, "config.yaml"), "--log-format", "json")
	if out.code != 0 {
		t.Fatalf("run failed:\n%s", out)
	}
	if out.stdout != "" {
		t.Errorf("stdout with --log-format json, want nothing:\n%s", out)
	}
	done := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out.stderr))
	var last map[string]any
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("stderr line %q is not JSON: %v", sc.Text(), err)
		}
		if rec["msg"] == "state done" {
			done[rec["state"].(string)]++
		}
		last = rec
	}
	for _, s := range runSteps {
		if done[s] != 1 {
			t.Errorf("%d records say %s is done, want 1:\n%s", done[s], s, out)
		}
	}
	if last["msg"] != "Process Complete, Your device is now provisioned" || !strings.HasPrefix(fmt.Sprint(last["thing"]), "gg_") {
		t.Errorf("last record %v, want Greengrass's line with the thing", last)
	}
}

// Under systemd (stderr is the journal's stream) a run logs to the
// journal: a record per step with its fields, the failure at priority 3,
// nothing on stdout or stderr.
func TestRunUnderSystemdLogsToTheJournal(t *testing.T) {
	fault, err := cloudsim.ParseFault("RegisterThing:reject=403/AccessDenied:times=1")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := cloudtest.Start(t, cloudsim.Options{Faults: []cloudsim.Fault{fault}}, nil)
	cfg := filepath.Join(dir, "config.yaml")

	j := journaltest.Listen(t)
	out := runCLI(t, []string{envJournalSocket + "=" + j.Path}, journalStream, "run", "--config", cfg)
	entries := j.Drain(t)
	if out.code != 1 || out.stdout != "" || out.stderr != "" {
		t.Fatalf("under systemd, want exit 1 and no output:\n%s", out)
	}
	var failed map[string]string
	for _, e := range entries {
		if e["PARSE_ERROR"] != "" {
			t.Fatalf("entry not in the native protocol: %s", e["PARSE_ERROR"])
		}
		if e["SYSLOG_IDENTIFIER"] != "fleetprov" {
			t.Errorf("entry %v: SYSLOG_IDENTIFIER is not fleetprov", e)
		}
		if e["MESSAGE"] == "state failed" {
			failed = e
		}
		if strings.Contains(e["ERR"], "AccessDenied") && e["MESSAGE"] != "state failed" {
			t.Errorf("the cause is in another entry too: %v", e)
		}
	}
	if failed == nil || failed["PRIORITY"] != "3" || failed["STATE"] != "RegisterThing" ||
		!strings.HasPrefix(failed["ERR"], `RegisterThing rejected: statusCode=403 errorCode="AccessDenied"`) {
		t.Errorf("failure entry %v, want PRIORITY 3, STATE RegisterThing, ERR starting with the cause\nall: %v", failed, entries)
	}

	j = journaltest.Listen(t)
	out = runCLI(t, []string{envJournalSocket + "=" + j.Path}, journalStream, "run", "--config", cfg)
	entries = j.Drain(t)
	if out.code != 0 || out.stdout != "" || out.stderr != "" {
		t.Fatalf("under systemd, want exit 0 and no output:\n%s", out)
	}
	done := map[string]bool{}
	for _, e := range entries {
		if e["MESSAGE"] == "state done" {
			if e["PRIORITY"] != "6" || e["DURATION"] == "" {
				t.Errorf("state done entry %v: want PRIORITY 6 and a DURATION", e)
			}
			done[e["STATE"]] = true
		}
	}
	if !done["RegisterThing"] || !done["Persist"] || !done["Restart"] {
		t.Errorf("no state done entry for each state resumed: %v", entries)
	}
	last := entries[len(entries)-1]
	if last["MESSAGE"] != "Process Complete, Your device is now provisioned" || last["PRIORITY"] != "6" ||
		!strings.HasPrefix(last["THING"], "gg_") || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(last["CERTIFICATE_ID"]) {
		t.Errorf("last entry %v, want Greengrass's line with THING and CERTIFICATE_ID", last)
	}
}

// JOURNAL_STREAM names a stream, not "systemd somewhere above": a run whose
// stderr was redirected elsewhere keeps the variable, and the defaults of
// a pipe.
func TestJournalStreamOfAnotherFileIsNotSystemd(t *testing.T) {
	other, err := os.Create(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	dir, _ := cloudtest.Start(t, cloudsim.Options{}, nil)
	j := journaltest.Listen(t)
	out := runCLI(t, append(journalStream(other), envJournalSocket+"="+j.Path), nil, "run", "--config", filepath.Join(dir, "config.yaml"))
	if entries := j.Drain(t); len(entries) != 0 {
		t.Errorf("%d journal entries, want none: %v", len(entries), entries)
	}
	if out.code != 0 || !strings.Contains(out.stdout, "  ok    Restart") {
		t.Errorf("want the progress lines of a pipe:\n%s", out)
	}
}

// With no journal to send to, records go to stderr after one line saying
// why, instead of vanishing.
func TestJournalMissingFallsBackToStderr(t *testing.T) {
	dir, _ := cloudtest.Start(t, cloudsim.Options{}, nil)
	missing := filepath.Join(t.TempDir(), "no.socket")
	for _, tc := range []struct {
		name      string
		stderrEnv func(*os.File) []string
		args      []string
	}{
		{"asked for", nil, []string{"--log-format", "journal"}},
		{"under systemd", journalStream, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"run", "--config", filepath.Join(dir, "config.yaml"), "--force"}, tc.args...)
			out := runCLI(t, []string{envJournalSocket + "=" + missing}, tc.stderrEnv, args...)
			if out.code != 0 {
				t.Fatalf("run failed:\n%s", out)
			}
			lines := strings.Split(out.stderr, "\n")
			want := `^time=\S+ level=WARN msg="no journal to log to: logging to stderr instead" socket=` + regexp.QuoteMeta(missing) + ` err="no such file or directory"$`
			if !regexp.MustCompile(want).MatchString(lines[0]) {
				t.Errorf("first stderr line %q, want it to say why records go there", lines[0])
			}
			if n := strings.Count(out.stderr, "no journal to log to"); n != 1 {
				t.Errorf("the warning is said %d times, want 1", n)
			}
			for _, s := range runSteps {
				if !strings.Contains(out.stderr, `level=INFO msg="state done" state=`+s+" ") {
					t.Errorf("no record of %s on stderr:\n%s", s, out)
				}
			}
			if out.stdout != "" {
				t.Errorf("stdout, want nothing:\n%s", out)
			}
		})
	}
}
