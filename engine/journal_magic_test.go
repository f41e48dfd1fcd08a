package engine

import (
	"bytes"
	"testing"

	"github.com/fleetprov/fleetprov/config"
)

// Config refuses a journalPath whose file does not start like a journal
// record, so that a run never cuts someone else's file off as torn: it
// must know how a record starts.
func TestConfigKnowsHowRecordsStart(t *testing.T) {
	line, err := encodeRecord(Record{State: PrepareKey})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(line, []byte(config.JournalMagic)) {
		t.Fatalf("a record starts %q, config.JournalMagic is %q", line[:8], config.JournalMagic)
	}
}
