package engine

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestJournalWriterProcess is not a test on its own: TestJournalSurvivesSIGKILL
// runs the test binary with it selected to get a process that appends
// records until it is killed.
func TestJournalWriterProcess(t *testing.T) {
	path := os.Getenv("FLEETPROV_TEST_JOURNAL_WRITER")
	if path == "" {
		t.Skip("helper process for TestJournalSurvivesSIGKILL")
	}
	j, err := OpenJournal(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	fmt.Println("open")
	big := strings.Repeat("x", 3000) // records larger than one small write
	for i := 0; ; i++ {
		if err := j.Append(Record{State: []string{PrepareKey, CreateCertificate, RegisterThing, Persist, Restart}[i%5], Time: time.Now(), Attempt: 1, Data: Data{CertificatePEM: big}}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
	}
}

// A process killed at an arbitrary moment while appending leaves a journal
// whose records all verify, numbered without gaps, and that a new writer
// can extend.
func TestJournalSurvivesSIGKILL(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "journal")
	total := 0
	for round := 0; round < 8; round++ {
		cmd := exec.Command(self, "-test.run=^TestJournalWriterProcess$")
		cmd.Env = append(os.Environ(), "FLEETPROV_TEST_JOURNAL_WRITER="+path)
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := out.Read(buf); err != nil {
			t.Fatalf("writer did not start: %v", err)
		}
		// On a busy machine the writer may not append for a while after
		// it opened the journal: wait (generously) for its first record,
		// then kill it a moment later, a different moment each round.
		// Only what was appended is read: reading the whole journal each
		// time would let it grow faster than it is read.
		var before int64
		if fi, err := os.Stat(path); err == nil {
			before = fi.Size()
		}
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if wroteLine(path, before) {
				break
			}
		}
		time.Sleep(time.Duration(20+round*13) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()

		recs, skipped, err := ReadJournal(path)
		if err != nil {
			t.Fatal(err)
		}
		if skipped > 1 {
			t.Fatalf("round %d: %d bad records; only a torn last one is possible", round, skipped)
		}
		if len(recs) <= total {
			t.Fatalf("round %d: %d records, had %d before: the writer made no progress", round, len(recs), total)
		}
		for i, r := range recs {
			if r.Seq != i+1 {
				t.Fatalf("round %d: record %d has seq %d", round, i, r.Seq)
			}
		}
		total = len(recs)
	}
}

// wroteLine reports whether a whole line was appended to path after offset.
func wroteLine(path string, offset int64) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	n, _ := f.ReadAt(buf, offset)
	return bytes.IndexByte(buf[:n], '\n') >= 0
}
