package engine

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestResumeRules(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	withToken := func(age time.Duration) Data {
		return Data{KeyURI: "file:/k", CertificateID: "abc", CertificatePEM: "PEM", OwnershipToken: "tok", TokenIssuedAt: now.Add(-age)}
	}
	rec := func(state string, d Data) *Record { return &Record{State: state, Attempt: 1, Data: d} }
	tests := []struct {
		name      string
		in        ResumeInput
		start     string
		already   bool
		keepToken bool
		reason    string
	}{
		{name: "fresh", in: ResumeInput{}, start: DeriveParams, reason: "no journal"},
		{name: "config already provisioned", in: ResumeInput{ConfigProvisioned: true}, already: true, reason: "system.certificateFilePath"},
		{name: "force over done", in: ResumeInput{Force: true, Last: rec(Done, withToken(0))}, start: DeriveParams, reason: "--force"},
		{name: "done", in: ResumeInput{Last: rec(Done, withToken(0))}, already: true},
		{name: "killed in DeriveParams", in: ResumeInput{Last: rec(DeriveParams, Data{})}, start: DeriveParams, reason: "template parameters not derived yet"},
		{name: "killed in PrepareKey", in: ResumeInput{Last: rec(PrepareKey, Data{})}, start: PrepareKey},
		{name: "killed in CreateCertificate", in: ResumeInput{Last: rec(CreateCertificate, Data{KeyURI: "file:/k"})}, start: CreateCertificate},
		{name: "fresh token reused", in: ResumeInput{Last: rec(RegisterThing, withToken(10*time.Minute))}, start: RegisterThing, keepToken: true, reason: "reusing ownership token issued 10m0s ago"},
		{name: "token inside margin", in: ResumeInput{Last: rec(RegisterThing, withToken(56*time.Minute))}, start: CreateCertificate, reason: "too old"},
		{name: "token expired", in: ResumeInput{Last: rec(RegisterThing, withToken(2*time.Hour))}, start: CreateCertificate, reason: "too old"},
		{name: "token from the future", in: ResumeInput{Last: rec(RegisterThing, withToken(-time.Hour))}, start: CreateCertificate},
		{name: "killed in Persist", in: ResumeInput{Last: rec(Persist, withToken(3*time.Hour))}, start: Persist, keepToken: true},
		{name: "killed in Verify", in: ResumeInput{Last: rec(Verify, withToken(0))}, start: Verify, keepToken: true, reason: "files written, new certificate not confirmed to connect"},
		{name: "failed in Verify", in: ResumeInput{Last: &Record{State: Failed, FailedState: Verify, Error: "refused", Data: withToken(0)}}, start: Verify, keepToken: true, reason: "last run failed in Verify: refused"},
		{name: "killed in Restart", in: ResumeInput{Last: rec(Restart, withToken(0))}, start: Restart, keepToken: true},
		{name: "failed in RegisterThing", in: ResumeInput{Last: &Record{State: Failed, FailedState: RegisterThing, Error: "boom", Data: withToken(time.Minute)}}, start: RegisterThing, keepToken: true, reason: "last run failed in RegisterThing: boom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Now, tc.in.TokenLifetime, tc.in.TokenMargin = now, time.Hour, 5*time.Minute
			p, err := builtinMachine(t).Resume(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if p.AlreadyProvisioned != tc.already || (!tc.already && p.Start != tc.start) {
				t.Fatalf("plan = %+v, want start %s already %v", p, tc.start, tc.already)
			}
			if !tc.already && tc.in.Last != nil && !tc.in.Force {
				if got := p.Data.OwnershipToken != ""; got != tc.keepToken && tc.in.Last.Data.OwnershipToken != "" {
					t.Errorf("token kept = %v, want %v", got, tc.keepToken)
				}
			}
			if !strings.Contains(p.Reason, tc.reason) {
				t.Errorf("reason %q does not contain %q", p.Reason, tc.reason)
			}
		})
	}
}

func TestResumeCapsReentries(t *testing.T) {
	last := &Record{State: Failed, FailedState: CreateCertificate, Attempt: 3, Error: "rejected"}
	_, err := builtinMachine(t).Resume(ResumeInput{Last: last, MaxAttempts: 3, Now: time.Now(), TokenLifetime: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "state CreateCertificate was entered 3 times without progress") {
		t.Fatalf("err = %v", err)
	}
	p, err := builtinMachine(t).Resume(ResumeInput{Last: last, MaxAttempts: 4, Now: time.Now(), TokenLifetime: time.Hour})
	if err != nil || p.Attempt != 4 {
		t.Fatalf("plan %+v, err %v; want attempt 4", p, err)
	}
}

func builtinMachine(t *testing.T) *Machine {
	t.Helper()
	m, err := NewMachine(Steps(Builtins{}))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A journal naming a state this machine does not have is refused with a
// message naming the state and the fleetprov that wrote it, not cut off as
// torn: the record is whole.
func TestResumeUnknownState(t *testing.T) {
	last := &Record{Seq: 7, State: "RegisterWithVendor", Attempt: 1, Writer: "v9.9.9"}
	_, err := builtinMachine(t).Resume(ResumeInput{Last: last, Now: time.Now()})
	want := "journal names state \"RegisterWithVendor\", which this build of fleetprov (" + Version() + ") does not have; it was written by fleetprov v9.9.9: run the build that wrote it, or `fleetprov reset` to start over"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant  %s", err, want)
	}
}

// A record in a format newer than this build reads is refused, naming the
// version that wrote it.
func TestResumeNewerRecordFormat(t *testing.T) {
	last := &Record{Seq: 3, Format: RecordFormat + 1, Writer: "v9.9.9", State: PrepareKey, Attempt: 1}
	_, err := builtinMachine(t).Resume(ResumeInput{Last: last, Now: time.Now()})
	want := fmt.Sprintf("the last record (3) was written by fleetprov v9.9.9 in record format %d, and this fleetprov (%s) reads format %d at most: run that version or a newer one, or `fleetprov reset` to start over", RecordFormat+1, Version(), RecordFormat)
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant  %s", err, want)
	}
}

// Every record written carries the format and the writer; a record
// without them (written before) reads as format 1.
func TestRecordsCarryFormatAndWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Append(Record{State: PrepareKey, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	recs, _, err := ReadJournal(path)
	if err != nil || len(recs) != 1 || recs[0].Format != RecordFormat || recs[0].Writer != Version() || Version() == "" {
		t.Fatalf("records %+v, %v", recs, err)
	}
	p, err := builtinMachine(t).Resume(ResumeInput{Last: &Record{Seq: 1, State: CreateCertificate, Attempt: 1}, Now: time.Now()})
	if err != nil || p.Start != CreateCertificate {
		t.Errorf("a record without a format: plan %+v, %v", p, err)
	}
}
