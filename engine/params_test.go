package engine

import (
	"errors"
	"maps"
	"strconv"
	"testing"
)

// Template parameters are derived once per provisioning identity: they are
// journaled before the first state that needs them, a resumed run carries
// the journaled ones without deriving again, and --force derives anew.
func TestParamsDerivedOncePerIdentity(t *testing.T) {
	f := newFixture(t)
	f.states[DeriveParams].fn = func(r *Run) error {
		r.Data.TemplateParams = map[string]string{"SerialNumber": "derived-" + strconv.Itoa(f.states[DeriveParams].runs)}
		r.Data.ParamSources = map[string]string{"SerialNumber": "file path=/serial"}
		return nil
	}
	f.states[CreateCertificate].fn = func(r *Run) error {
		if f.states[CreateCertificate].runs == 1 {
			return errors.New("connection refused")
		}
		return nil
	}
	var sent []map[string]string
	f.states[RegisterThing].fn = func(r *Run) error {
		sent = append(sent, maps.Clone(r.Data.TemplateParams))
		return nil
	}

	if _, err := f.run(t, false); err == nil {
		t.Fatal("first run succeeded; want it to fail in CreateCertificate")
	}
	recs, _, _ := ReadJournal(f.journal)
	var prepare *Record
	for i := range recs {
		if recs[i].State == PrepareKey {
			prepare = &recs[i]
		}
	}
	if prepare == nil || prepare.Data.TemplateParams["SerialNumber"] != "derived-1" || prepare.Data.ParamSources["SerialNumber"] != "file path=/serial" {
		t.Fatalf("PrepareKey's entry record %+v does not carry the derived parameters", prepare)
	}

	if _, err := f.run(t, false); err != nil {
		t.Fatal(err)
	}
	if n := f.states[DeriveParams].runs; n != 1 {
		t.Errorf("DeriveParams ran %d times over a failed run and its resume, want 1", n)
	}
	if len(sent) != 1 || sent[0]["SerialNumber"] != "derived-1" {
		t.Errorf("RegisterThing sent %v, want the first run's value", sent)
	}

	if _, err := f.run(t, true); err != nil {
		t.Fatal(err)
	}
	if len(sent) != 2 || sent[1]["SerialNumber"] != "derived-2" {
		t.Errorf("--force sent %v, want newly derived parameters", sent)
	}
}
