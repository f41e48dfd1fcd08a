package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// FuzzJournal feeds whole journal files to the reader: go test -fuzz
// FuzzJournal ./engine. With seal set, every line that looks like a
// record is given its checksum first, so that the records' content is
// fuzzed too. The seeds in testdata/fuzz/FuzzJournal (journals of real
// runs, torn, corrupt and foreign ones) run as a normal test.
//
// What must hold for any file:
//   - every record read comes from a whole line whose checksum verifies
//     (checked here independently of the reader), in file order;
//   - the file and the in-memory reader agree, and a second read is the
//     same;
//   - a record read encodes back to a line that reads as the same record;
//   - once the file is opened for a run (its torn or corrupt tail cut
//     off), the next append reads back as the last record and nothing
//     read before is lost;
//   - resuming from the last record either refuses with a message or
//     gives a plan that starts at a step of the machine within the cap
//     on attempts, and never panics.
func FuzzJournal(f *testing.F) {
	m, err := NewMachine(Steps(Builtins{}))
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, file []byte, seal bool) {
		if seal {
			file = sealLines(file)
		}
		recs, good, skipped, err := readRecords(bytes.NewReader(file))
		if err != nil {
			t.Fatalf("readRecords from memory: %v", err)
		}
		if good < 0 || good > int64(len(file)) || (good > 0 && file[good-1] != '\n') {
			t.Fatalf("good offset %d is not the end of a line of the %d-byte file", good, len(file))
		}
		verified := verifiedBodies(file)
		if len(recs) != len(verified) {
			t.Fatalf("reader returned %d records; the file has %d whole lines with a verified checksum and a state", len(recs), len(verified))
		}
		for i, rec := range recs {
			var want Record
			if err := json.Unmarshal(verified[i], &want); err != nil {
				t.Fatalf("record %d: verified body does not decode: %v", i, err)
			}
			if !sameRecord(rec, want) {
				t.Fatalf("record %d = %s, but its verified line holds %s", i, recJSON(rec), recJSON(want))
			}
			line, err := encodeRecord(rec)
			if err != nil {
				t.Fatalf("record %d read but cannot be written back: %v", i, err)
			}
			again, ok := decodeRecord(line)
			if !ok || !sameRecord(rec, again) {
				t.Fatalf("record %d does not survive encode/decode: %s -> %q -> %s (ok %v)", i, recJSON(rec), line, recJSON(again), ok)
			}
		}

		path := filepath.Join(dir, "journal")
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		fromFile, fileSkipped, err := ReadJournal(path)
		if err != nil {
			t.Fatalf("ReadJournal: %v", err)
		}
		if !sameRecords(fromFile, recs) || fileSkipped != skipped {
			t.Fatalf("ReadJournal gave %d records, %d skipped; the reader %d, %d", len(fromFile), fileSkipped, len(recs), skipped)
		}

		j, err := OpenJournal(path)
		if err != nil {
			t.Fatalf("OpenJournal: %v", err)
		}
		if !sameRecords(j.Records(), recs) {
			j.Close()
			t.Fatalf("OpenJournal read %d records, ReadJournal %d", len(j.Records()), len(recs))
		}
		next := Record{State: PrepareKey, Time: time.Unix(1700000000, 0).UTC(), Attempt: 1}
		err = j.Append(next)
		j.Close()
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		after, _, err := ReadJournal(path)
		if err != nil {
			t.Fatalf("ReadJournal after append: %v", err)
		}
		if len(after) != len(recs)+1 || !sameRecords(after[:len(recs)], recs) {
			t.Fatalf("after one append: %d records, want the %d read before plus the new one", len(after), len(recs))
		}
		if got := after[len(after)-1]; got.State != PrepareKey || got.Format != RecordFormat {
			t.Fatalf("appended record reads back as %s", recJSON(got))
		}

		if len(recs) == 0 {
			return
		}
		last := recs[len(recs)-1]
		in := ResumeInput{Last: &last, Now: time.Unix(1700000000, 0), TokenLifetime: time.Hour, TokenMargin: 5 * time.Minute, MaxAttempts: 10}
		plan, err := m.Resume(in)
		if err != nil || plan.AlreadyProvisioned {
			return
		}
		if s, ok := m.step(plan.Start); !ok || s.EveryRun {
			t.Fatalf("resume from %s plans to start at %q, not a journaled step", recJSON(last), plan.Start)
		}
		if plan.Attempt < 1 || plan.Attempt > in.MaxAttempts {
			t.Fatalf("resume from %s plans attempt %d of at most %d", recJSON(last), plan.Attempt, in.MaxAttempts)
		}
	})
}

// sealLines gives every line of the form "fp1 <anything> <JSON>" the
// checksum of its JSON, so that the fuzzer reaches the decoding of whole
// records (as another build, or a hand, may have written them) and not
// only the framing.
func sealLines(file []byte) []byte {
	var out []byte
	for len(file) > 0 {
		line := file
		if nl := bytes.IndexByte(file, '\n'); nl >= 0 {
			line = file[:nl+1]
		}
		file = file[len(line):]
		body := bytes.TrimSuffix(line, []byte("\n"))
		fields := bytes.SplitN(body, []byte(" "), 3)
		if len(fields) == 3 && string(fields[0]) == recordMagic && len(line) > len(body) {
			line = fmt.Appendf(nil, "%s %08x %s\n", recordMagic, crc32.Checksum(fields[2], crc32.MakeTable(crc32.Castagnoli)), fields[2])
		}
		out = append(out, line...)
	}
	return out
}

// verifiedBodies is an independent reading of the journal format: the
// JSON of every newline-terminated line "fp1 <8 hex digits> <JSON>" whose
// checksum verifies and whose JSON names a state.
func verifiedBodies(file []byte) [][]byte {
	var out [][]byte
	for {
		nl := bytes.IndexByte(file, '\n')
		if nl < 0 {
			return out
		}
		line := file[:nl]
		file = file[nl+1:]
		magic, rest, ok := bytes.Cut(line, []byte(" "))
		if !ok || string(magic) != recordMagic {
			continue
		}
		sum, body, ok := bytes.Cut(rest, []byte(" "))
		if !ok {
			continue
		}
		want, err := strconv.ParseUint(string(sum), 16, 32)
		if err != nil || crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)) != uint32(want) {
			continue
		}
		var probe Record
		if json.Unmarshal(body, &probe) != nil || probe.State == "" {
			continue
		}
		out = append(out, body)
	}
}

func recJSON(r Record) string {
	b, err := json.Marshal(r)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// sameRecord compares by encoding: time.Time values that are the same
// instant in the same offset compare equal however their Location was
// built.
func sameRecord(a, b Record) bool { return recJSON(a) == recJSON(b) }

func sameRecords(a, b []Record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameRecord(a[i], b[i]) {
			return false
		}
	}
	return true
}
