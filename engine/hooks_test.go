package engine

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/hook"
)

// testHook answers with fn (nil: Proceed) and records every event it is
// sent.
type testHook struct {
	name   string
	fn     func(ev hook.Event) (*hook.NotifyResponse, error)
	events []hook.Event
}

func (h *testHook) Name() string { return h.name }
func (h *testHook) Notify(_ context.Context, req *hook.NotifyRequest) (*hook.NotifyResponse, error) {
	h.events = append(h.events, req.Event)
	if h.fn == nil {
		return &hook.NotifyResponse{}, nil
	}
	return h.fn(req.Event)
}

// seen lists the events as "kind State".
func (h *testHook) seen() []string {
	var out []string
	for _, ev := range h.events {
		out = append(out, string(ev.Kind)+" "+ev.State)
	}
	return out
}

func lastRecord(t *testing.T, path string) Record {
	t.Helper()
	recs, _, err := ReadJournal(path)
	if err != nil || len(recs) == 0 {
		t.Fatalf("journal: %d records, %v", len(recs), err)
	}
	return recs[len(recs)-1]
}

// issueCert makes CreateCertificate journal a certificate and token, as the
// real state does.
func issueCert(f *fixture, id string) {
	f.states[CreateCertificate].fn = func(r *Run) error {
		r.Data.CertificateID, r.Data.CertificatePEM = id, "PEM-"+id
		r.Data.OwnershipToken, r.Data.TokenIssuedAt = "SECRET-TOKEN-"+id, time.Now()
		return nil
	}
}

func TestHookSeesEveryEventInOrder(t *testing.T) {
	f := newFixture(t)
	issueCert(f, "c1")
	f.states[RegisterThing].fn = func(r *Run) error {
		r.Data.ThingName = "gg_1"
		return r.Data.Put("BackendRegister", map[string]string{"deviceId": "d-7"})
	}
	h := &testHook{name: "watcher"}
	f.hooks = []hook.Hook{h}
	if _, err := f.run(t, false); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"enter DeriveParams", "leave DeriveParams",
		"enter PrepareKey", "leave PrepareKey",
		"enter CreateCertificate", "leave CreateCertificate",
		"enter RegisterThing", "leave RegisterThing",
		"enter Persist", "leave Persist",
		"enter Verify", "leave Verify",
		"enter Restart", "leave Restart",
		"done Done",
	}
	if got := h.seen(); !slices.Equal(got, want) {
		t.Fatalf("hook saw\n%v\nwant\n%v", got, want)
	}
	// Leave carries the state's result before it is journaled; Enter the
	// data the state starts from.
	for _, ev := range h.events {
		_, hasThing := ev.Data["thingName"]
		switch {
		case ev.Kind == hook.Enter && ev.State == RegisterThing && hasThing:
			t.Errorf("enter RegisterThing already has a thing name: %v", ev.Data)
		case ev.Kind == hook.Leave && ev.State == RegisterThing && ev.Data["thingName"] != "gg_1":
			t.Errorf("leave RegisterThing data %v, want thingName gg_1", ev.Data)
		case ev.Kind == hook.Done && !reflect.DeepEqual(ev.Data["ext"], map[string]any{"BackendRegister": map[string]any{"deviceId": "d-7"}}):
			t.Errorf("done data %v, want a step's own data under ext", ev.Data)
		case ev.Kind == hook.Enter && ev.Attempt != 1:
			t.Errorf("%s %s attempt %d, want 1", ev.Kind, ev.State, ev.Attempt)
		}
	}
}

func TestHookNeverSeesTheOwnershipToken(t *testing.T) {
	f := newFixture(t)
	issueCert(f, "c1")
	fail := true
	f.states[Persist].fn = func(r *Run) error {
		if fail {
			return errors.New("disk full")
		}
		return nil
	}
	f.states[RegisterThing].fn = func(r *Run) error {
		if f.states[RegisterThing].runs == 1 {
			return failure.Transient(errors.New("503"))
		}
		return nil
	}
	h := &testHook{name: "watcher"}
	f.hooks = []hook.Hook{h}
	if _, err := f.run(t, false); err == nil {
		t.Fatal("run did not fail in Persist")
	}
	// The token is in the journal (the next run needs it) ...
	recs, _, _ := ReadJournal(f.journal)
	if recs[len(recs)-1].Data.OwnershipToken != "SECRET-TOKEN-c1" {
		t.Fatalf("the test is void: the journal holds no token")
	}
	fail = false
	if _, err := f.run(t, false); err != nil {
		t.Fatal(err)
	}
	kinds := map[hook.Kind]bool{}
	for _, ev := range h.events {
		kinds[ev.Kind] = true
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		// ... but no event, of any kind, carries it to a hook.
		if strings.Contains(string(b), "SECRET-TOKEN") || strings.Contains(string(b), "certificateOwnershipToken") {
			t.Errorf("%s %s event carries the ownership token: %s", ev.Kind, ev.State, b)
		}
		if ev.State == RegisterThing && ev.Data["certificateId"] != "c1" {
			t.Errorf("%s %s event lacks the certificate id: %v", ev.Kind, ev.State, ev.Data)
		}
	}
	for _, k := range []hook.Kind{hook.Enter, hook.Leave, hook.Retrying, hook.Failed, hook.Done} {
		if !kinds[k] {
			t.Errorf("no %s event reached the hook", k)
		}
	}
}

// Every journaled field is either shown to hooks or listed as secret: a new
// field cannot reach hooks without someone deciding it may.
func TestEveryDataFieldIsClassifiedForHooks(t *testing.T) {
	public := []string{
		"newKey", "keyUri", "keyAlgorithm", "csrPem", "certificateId", "certificatePem", "tokenIssuedAt",
		// Certificates are public; a hook may want to know one is in doubt.
		"priorCertificateId", "priorCertificatePem",
		"templateName", "thingName", "deviceConfiguration", "files",
		// When the new identity connected, and which claim files went.
		"verifiedAt", "claimRetired",
		// Sent to the cloud as they are, and shown by status.
		"templateParams", "paramSources",
		// A vendor's steps' own data: their hooks may need it, and Put
		// says it must not be a private key.
		"ext",
	}
	typ := reflect.TypeFor[Data]()
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if !slices.Contains(public, name) && !slices.Contains(secretDataFields, name) {
			t.Errorf("Data field %s (%q) is new: if hooks must not see it, add it to secretDataFields in hooks.go; else add it to the public list in this test", typ.Field(i).Name, name)
		}
	}
}

func TestHookVetoOnEnterStopsTheRunAndCostsNoAttempt(t *testing.T) {
	f := newFixture(t)
	issueCert(f, "c1")
	veto := true
	gate := &testHook{name: "gate", fn: func(ev hook.Event) (*hook.NotifyResponse, error) {
		if veto && ev.Kind == hook.Enter && ev.State == RegisterThing {
			return &hook.NotifyResponse{Verdict: hook.Veto, Reason: "battery at 12%"}, nil
		}
		return nil, nil
	}}
	after := &testHook{name: "after"}
	f.hooks = []hook.Hook{gate, after}

	// More vetoed runs than MaxAttempts (10) allows entries: a veto is no
	// entry, so the device is never locked out by one.
	for i := range 12 {
		_, err := f.run(t, false)
		if err == nil || err.Error() != "RegisterThing: enter vetoed by gate: battery at 12%" {
			t.Fatalf("run %d: err = %v", i+1, err)
		}
		var v *VetoError
		if !errors.As(err, &v) || v.Hook != "gate" || v.State != RegisterThing || v.Kind != hook.Enter {
			t.Fatalf("err %v is not the gate's VetoError", err)
		}
		if failure.IsTransient(err) {
			t.Fatalf("a veto was marked transient")
		}
		last := lastRecord(t, f.journal)
		if last.State != Failed || last.FailedState != RegisterThing || last.Attempt != 0 || last.Data.OwnershipToken != "SECRET-TOKEN-c1" {
			t.Fatalf("run %d: last record %+v, want Failed in RegisterThing, 0 entries, the token kept", i+1, last)
		}
	}
	if n := f.states[RegisterThing].runs; n != 0 {
		t.Errorf("vetoed RegisterThing ran %d times", n)
	}
	if slices.Contains(after.seen(), "enter RegisterThing") {
		t.Errorf("the hook after the one that vetoed was asked too: %v", after.seen())
	}
	if !slices.Contains(after.seen(), "failed RegisterThing") {
		t.Errorf("hooks were not told of the failure: %v", after.seen())
	}

	veto = false
	if _, err := f.run(t, false); err != nil {
		t.Fatal(err)
	}
	if f.states[CreateCertificate].runs != 1 || f.states[RegisterThing].runs != 1 {
		t.Errorf("CreateCertificate ran %d, RegisterThing %d times; want 1 and 1 (resume with the journaled token)",
			f.states[CreateCertificate].runs, f.states[RegisterThing].runs)
	}
}

func TestHookVetoOnLeaveDropsTheResult(t *testing.T) {
	f := newFixture(t)
	issueCert(f, "c1")
	veto := true
	f.hooks = []hook.Hook{&testHook{name: "gate", fn: func(ev hook.Event) (*hook.NotifyResponse, error) {
		if veto && ev.Kind == hook.Leave && ev.State == CreateCertificate {
			return &hook.NotifyResponse{Verdict: hook.Veto, Reason: "certificate " + ev.Data["certificateId"].(string) + " refused"}, nil
		}
		return nil, nil
	}}}
	for i := 1; i <= 2; i++ {
		_, err := f.run(t, false)
		if err == nil || err.Error() != "CreateCertificate: leave vetoed by gate: certificate c1 refused" {
			t.Fatalf("err = %v", err)
		}
		// The state ran: this entry counts. Its result was not journaled.
		last := lastRecord(t, f.journal)
		if last.State != Failed || last.FailedState != CreateCertificate || last.Attempt != i || last.Data.CertificateID != "" || last.Data.OwnershipToken != "" {
			t.Fatalf("run %d: last record %+v, want Failed in CreateCertificate, entry %d, no certificate", i, last, i)
		}
	}
	veto = false
	if _, err := f.run(t, false); err != nil {
		t.Fatal(err)
	}
	if n := f.states[CreateCertificate].runs; n != 3 {
		t.Errorf("CreateCertificate ran %d times, want 3", n)
	}
	if d := lastRecord(t, f.journal).Data; d.CertificateID != "c1" {
		t.Errorf("certificate not journaled after the veto lifted: %+v", d)
	}
}

func TestHookRetryLaterRetriesTheHookNotTheState(t *testing.T) {
	f := newFixture(t)
	asked := map[hook.Kind]int{}
	h := &testHook{name: "clock", fn: func(ev hook.Event) (*hook.NotifyResponse, error) {
		if ev.State != Persist || (ev.Kind != hook.Enter && ev.Kind != hook.Leave) {
			return nil, nil
		}
		asked[ev.Kind]++
		if asked[ev.Kind] <= 2 {
			return &hook.NotifyResponse{Verdict: hook.RetryLater, Reason: "clock not set"}, nil
		}
		return nil, nil
	}}
	f.hooks = []hook.Hook{h}
	if _, err := f.run(t, false); err != nil {
		t.Fatal(err)
	}
	if asked[hook.Enter] != 3 || asked[hook.Leave] != 3 {
		t.Errorf("asked enter %d, leave %d times; want 3 and 3", asked[hook.Enter], asked[hook.Leave])
	}
	if n := f.states[Persist].runs; n != 1 {
		t.Errorf("Persist ran %d times, want 1", n)
	}
	var retries []string
	for _, ev := range f.events {
		if ev.Type == EventRetrying {
			retries = append(retries, ev.Err.Error())
		}
	}
	want := []string{
		"enter deferred by clock: clock not set", "enter deferred by clock: clock not set",
		"leave deferred by clock: clock not set", "leave deferred by clock: clock not set",
	}
	if !slices.Equal(retries, want) {
		t.Errorf("retry events %q, want %q", retries, want)
	}
	if n := strings.Count(strings.Join(h.seen(), ","), "retrying Persist"); n != 4 {
		t.Errorf("hook told of %d retries, want 4: %v", n, h.seen())
	}
}

func TestHookRetryLaterGivesUpAtDeadline(t *testing.T) {
	f := newFixture(t)
	f.hooks = []hook.Hook{&testHook{name: "clock", fn: func(ev hook.Event) (*hook.NotifyResponse, error) {
		if ev.Kind == hook.Enter && ev.State == Persist {
			time.Sleep(20 * time.Millisecond)
			return &hook.NotifyResponse{Verdict: hook.RetryLater}, nil
		}
		return nil, nil
	}}}
	_, err := f.run(t, false)
	if err == nil || !strings.HasPrefix(err.Error(), "Persist: enter deferred by clock: asked to retry later; gave up after ") || !strings.HasSuffix(err.Error(), "(retryDeadline)") {
		t.Fatalf("err = %v", err)
	}
	if f.states[Persist].runs != 0 {
		t.Errorf("Persist ran")
	}
	if last := lastRecord(t, f.journal); last.FailedState != Persist || last.Attempt != 0 {
		t.Errorf("last record %+v, want Failed in Persist with 0 entries", last)
	}
}

func TestHookErrorNamesTheHook(t *testing.T) {
	t.Run("fatal", func(t *testing.T) {
		f := newFixture(t)
		calls := 0
		f.hooks = []hook.Hook{&testHook{name: "broken", fn: func(ev hook.Event) (*hook.NotifyResponse, error) {
			if ev.Kind == hook.Enter && ev.State == Persist {
				calls++
				return nil, errors.New("exec format error")
			}
			return nil, nil
		}}}
		_, err := f.run(t, false)
		if err == nil || err.Error() != "Persist: exec format error; hook broken failed at enter" {
			t.Fatalf("err = %v", err)
		}
		if calls != 1 || f.states[Persist].runs != 0 {
			t.Errorf("a fatal hook error was retried (%d calls) or the state ran (%d)", calls, f.states[Persist].runs)
		}
	})
	t.Run("transient", func(t *testing.T) {
		f := newFixture(t)
		calls := 0
		f.hooks = []hook.Hook{&testHook{name: "flaky", fn: func(ev hook.Event) (*hook.NotifyResponse, error) {
			if ev.Kind == hook.Leave && ev.State == Persist {
				if calls++; calls == 1 {
					return nil, failure.Transient(errors.New("plugin exited"))
				}
			}
			return nil, nil
		}}}
		if _, err := f.run(t, false); err != nil {
			t.Fatal(err)
		}
		if calls != 2 || f.states[Persist].runs != 1 {
			t.Errorf("%d calls, Persist ran %d times; want 2 and 1", calls, f.states[Persist].runs)
		}
	})
	t.Run("unnamed", func(t *testing.T) {
		f := newFixture(t)
		f.hooks = []hook.Hook{&testHook{}, vetoAll{}}
		_, err := f.run(t, false)
		if err == nil || err.Error() != "DeriveParams: enter vetoed by hook 2 (engine.vetoAll): no reason given" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("errors on reports are only logged", func(t *testing.T) {
		f := newFixture(t)
		f.hooks = []hook.Hook{&testHook{name: "noisy", fn: func(ev hook.Event) (*hook.NotifyResponse, error) {
			if ev.Kind == hook.Done {
				return &hook.NotifyResponse{Verdict: hook.Veto}, errors.New("cannot write log")
			}
			return nil, nil
		}}}
		if _, err := f.run(t, false); err != nil {
			t.Fatalf("a hook's answer to done changed the run: %v", err)
		}
	})
}

type vetoAll struct{}

func (vetoAll) Notify(context.Context, *hook.NotifyRequest) (*hook.NotifyResponse, error) {
	return &hook.NotifyResponse{Verdict: hook.Veto}, nil
}

// BenchmarkHookData is what the engine spends per hook and event on the
// secret-free copy of the journaled data, with a certificate and a CSR in
// it as after CreateCertificate.
func BenchmarkHookData(b *testing.B) {
	pem := strings.Repeat("MIIBpjCCAUygAwIBAgIRAMBe0Ixnohv04cdTccLvWqYwCgYIKoZIzj0EAwIwOjES\n", 10)
	d := &Data{KeyURI: "file:/var/lib/greengrass/credentials/priv_key", KeyAlgorithm: "ecdsa-p256", CSRPEM: pem,
		CertificateID: strings.Repeat("ab", 32), CertificatePEM: pem, OwnershipToken: "SECRET", TokenIssuedAt: time.Now(),
		TemplateName: "GreengrassFleetProvisioningTemplate", TemplateParams: map[string]string{"SerialNumber": "a2_b9"}}
	for b.Loop() {
		if m := hookData(d); m["certificateOwnershipToken"] != nil {
			b.Fatal("token in hook data")
		}
	}
}
