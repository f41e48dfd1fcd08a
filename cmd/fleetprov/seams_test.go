package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fleetprov/fleetprov/internal/faultpoint"
	"github.com/fleetprov/fleetprov/internal/outputseam"
)

// The test binary, run as fleetprov, reads these; a release build has no
// code that does (TestReleaseBinaryIgnoresTestSeams).
const (
	// envTestHold pauses a run once it has entered the given states
	// ("Persist=60s,PrepareKey=60s"), so a test can act while the process
	// is inside one. SIGINT or SIGTERM ends the pause as it ends the run.
	envTestHold = "FLEETPROV_TEST_HOLD"
	// envCrashRecord names a file to which every durable-write point the
	// run reaches is appended, one "name<TAB>detail" line each, in order.
	envCrashRecord = "FLEETPROV_TEST_CRASH_RECORD"
	// envCrashRoot is cut off the front of paths in the record, so runs in
	// different directories record the same lines.
	envCrashRoot = "FLEETPROV_TEST_CRASH_ROOT"
	// envCrashAt N: the process sends itself SIGKILL at the N-th
	// durable-write point (counting from 1), once its line is recorded.
	envCrashAt = "FLEETPROV_TEST_CRASH_AT"
	// envTerminal 1 or 0: the run takes its stdout for a terminal, or
	// not, whatever it is.
	envTerminal = "FLEETPROV_TEST_TERMINAL"
	// envJournalSocket: the socket the journal handler sends to, in
	// place of journald's.
	envJournalSocket = "FLEETPROV_TEST_JOURNAL_SOCKET"
)

// testCLI runs the test binary as fleetprov with the test seams the
// environment asks for.
func testCLI(b func() int) {
	if err := installTestSeams(); err != nil {
		fmt.Fprintln(os.Stderr, "fleetprov test binary:", err)
		os.Exit(2)
	}
	os.Exit(b())
}

func installTestSeams() error {
	switch v := os.Getenv(envTerminal); v {
	case "":
	case "0", "1":
		outputseam.SetTerminal(v == "1")
	default:
		return fmt.Errorf("%s=%q is not 0 or 1", envTerminal, v)
	}
	if p := os.Getenv(envJournalSocket); p != "" {
		outputseam.SetJournalSocket(p)
	}
	hold, err := parseHold(os.Getenv(envTestHold))
	if err != nil {
		return err
	}
	var crashAt int
	if s := os.Getenv(envCrashAt); s != "" {
		if crashAt, err = strconv.Atoi(s); err != nil || crashAt < 1 {
			return fmt.Errorf("%s=%q is not a number from 1", envCrashAt, s)
		}
	}
	var record *os.File
	if p := os.Getenv(envCrashRecord); p != "" {
		if record, err = os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
			return err
		}
	}
	if hold == nil && crashAt == 0 && record == nil {
		return nil
	}
	root := os.Getenv(envCrashRoot)
	var mu sync.Mutex
	n := 0
	faultpoint.Set(func(ctx context.Context, name, detail string) error {
		if name == faultpoint.StateEntered {
			if d := hold[detail]; d > 0 {
				t := time.NewTimer(d)
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		n++
		if record != nil {
			// Straight to the file, unbuffered: a SIGKILL below must not
			// lose the line.
			_, _ = fmt.Fprintf(record, "%s\t%s\n", name, pointDetail(root, detail))
		}
		if n == crashAt {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
		return nil
	})
	return nil
}

var backupTime = regexp.MustCompile(`\.bak-[0-9]{8}T[0-9]{6}Z(\.[0-9]+)?`)

// pointDetail is detail relative to root, with backup times left out.
func pointDetail(root, detail string) string {
	if root != "" {
		if rel, err := filepath.Rel(root, detail); err == nil && !strings.HasPrefix(rel, "..") {
			detail = rel
		}
	}
	return backupTime.ReplaceAllString(detail, ".bak-TIME")
}

func parseHold(s string) (map[string]time.Duration, error) {
	if s == "" {
		return nil, nil
	}
	out := map[string]time.Duration{}
	for _, part := range strings.Split(s, ",") {
		name, dur, ok := strings.Cut(strings.TrimSpace(part), "=")
		d, err := time.ParseDuration(dur)
		if !ok || err != nil {
			return nil, fmt.Errorf("%s: %q is not STATE=DURATION", envTestHold, part)
		}
		out[name] = d
	}
	return out, nil
}
