package cloudsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"strconv"
)

// The first format of registry.log and registry.json, read so that an
// emulator directory written by an earlier version starts with every
// change it acknowledged; the next compaction rewrites both in CBOR.

// jsonLogRecord is one line of a JSON log after its checksum. V is null
// for a deletion.
type jsonLogRecord struct {
	Kind string          `json:"t"`
	Key  string          `json:"k"`
	V    json.RawMessage `json:"v"`
}

// decodeJSONLine splits "<crc32c hex> <body>"; ok is false for a torn or
// corrupt line.
func decodeJSONLine(line []byte) ([]byte, bool) {
	sum, body, found := bytes.Cut(line, []byte{' '})
	if !found {
		return nil, false
	}
	want, err := strconv.ParseUint(string(sum), 16, 32)
	if err != nil || uint32(want) != crc32.Checksum(body, castagnoli) {
		return nil, false
	}
	return body, true
}

// readJSONLog is applyLog for a log of the first format.
func readJSONLog(path string, b []byte, r *Registry, want int64) (int64, error) {
	r.legacy = true
	gen := int64(-1)
	for n := 0; ; n++ {
		line, rest, found := bytes.Cut(b, []byte{'\n'})
		if !found {
			return gen, nil // a last line without its newline is torn
		}
		b = rest
		body, ok := decodeJSONLine(line)
		if !ok {
			return gen, nil
		}
		if n == 0 {
			var h logHeader
			if json.Unmarshal(body, &h) != nil {
				return 0, fmt.Errorf("%s: not a registry log", path)
			}
			gen = h.Generation
			if gen != want {
				return gen, nil
			}
			continue
		}
		var jr jsonLogRecord
		if err := json.Unmarshal(body, &jr); err != nil {
			return 0, fmt.Errorf("%s: record %d: %w", path, n, err)
		}
		rec, err := jr.record()
		if err != nil {
			return 0, fmt.Errorf("%s: record %d: %w", path, n, err)
		}
		if err := r.applyRecord(rec); err != nil {
			return 0, fmt.Errorf("%s: record %d: %w", path, n, err)
		}
		r.logRecords++
	}
}

// record decodes the entity of a JSON log line.
func (jr jsonLogRecord) record() (logRecord, error) {
	rec := logRecord{Kind: jr.Kind, Key: jr.Key}
	if len(jr.V) == 0 || string(jr.V) == "null" {
		return rec, nil
	}
	var err error
	switch jr.Kind {
	case kindThing:
		rec.Thing = new(Thing)
		err = json.Unmarshal(jr.V, rec.Thing)
	case kindCert:
		rec.Cert = new(Certificate)
		err = json.Unmarshal(jr.V, rec.Cert)
	case kindToken:
		rec.Token = new(Token)
		err = json.Unmarshal(jr.V, rec.Token)
	case kindPolicy:
		rec.Policy = append(json.RawMessage(nil), jr.V...)
	}
	return rec, err
}
