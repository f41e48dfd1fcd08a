package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReadInputRefusesWhatNeverEnds(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte(strings.Repeat("a", 1025)), 0o600); err != nil {
		t.Fatal(err)
	}
	exact := filepath.Join(dir, "exact")
	if err := os.WriteFile(exact, []byte(strings.Repeat("a", 1024)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{"/dev/zero", "is a character device, not a regular file"},
		{fifo, "is a named pipe, not a regular file"},
		{big, "is larger than 1 KiB, far more than such a file holds"},
		{dir, ""}, // the read's own "is a directory", as for any other error
	} {
		done := make(chan error, 1)
		go func() { _, err := readInput(c.path, 1024); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s: read without error", c.path)
			} else if got := inputProblem(err); got != c.want {
				t.Errorf("%s: problem %q, want %q (error %v)", c.path, got, c.want, err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: still reading after 60 s", c.path)
		}
	}
	if b, err := readInput(exact, 1024); err != nil || len(b) != 1024 {
		t.Errorf("a file of exactly the bound: %d bytes, %v", len(b), err)
	}
}
