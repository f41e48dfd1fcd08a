package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/hook"
)

// stepState is a state for engine tests: it runs fn, which may inspect the
// run and the journal.
type stepState struct {
	name string
	fn   func(r *Run) error
	runs int
}

func (s *stepState) Name() string { return s.name }
func (s *stepState) Run(_ context.Context, r *Run) error {
	s.runs++
	if s.fn != nil {
		return s.fn(r)
	}
	return nil
}

type fixture struct {
	journal string
	states  map[string]*stepState
	events  []Event
	out     bytes.Buffer
	hooks   []hook.Hook
	backoff Backoff // zero: 1-4 ms
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{journal: filepath.Join(t.TempDir(), "journal"), states: map[string]*stepState{}}
	for _, n := range []string{LoadConfig, DeriveParams, PrepareKey, CreateCertificate, RegisterThing, Persist, Verify, Restart} {
		f.states[n] = &stepState{name: n}
	}
	f.states[LoadConfig].fn = func(r *Run) error {
		r.Config = &config.Config{JournalPath: f.journal, RetryDeadline: time.Second, TokenLifetime: time.Hour, TokenMargin: 5 * time.Minute}
		return nil
	}
	return f
}

func (f *fixture) run(t *testing.T, force bool) (*Result, error) {
	t.Helper()
	st := f.states
	backoff := f.backoff
	if backoff == (Backoff{}) {
		backoff = Backoff{Initial: time.Millisecond, Max: 4 * time.Millisecond}
	}
	e, err := New(Options{
		Steps: Steps(Builtins{LoadConfig: st[LoadConfig], DeriveParams: st[DeriveParams], PrepareKey: st[PrepareKey], CreateCertificate: st[CreateCertificate],
			RegisterThing: st[RegisterThing], Persist: st[Persist], Verify: st[Verify], Restart: st[Restart]}),
		Force:       force,
		Hooks:       f.hooks,
		Backoff:     backoff,
		Subscribers: []Subscriber{SubscriberFunc(func(ev Event) { f.events = append(f.events, ev) }), &Progress{W: &f.out}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return e.Provision(context.Background())
}

func TestEngineRunsInOrderAndJournalsBeforeEachState(t *testing.T) {
	f := newFixture(t)
	var seen []string
	for _, n := range []string{DeriveParams, PrepareKey, CreateCertificate, RegisterThing, Persist, Verify, Restart} {
		n := n
		f.states[n].fn = func(r *Run) error {
			// The entry record must already be on disk when the state runs.
			recs, _, err := ReadJournal(f.journal)
			if err != nil || len(recs) == 0 || recs[len(recs)-1].State != n {
				t.Errorf("%s ran before its entry was journaled (records %+v, %v)", n, recs, err)
			}
			seen = append(seen, n)
			if n == RegisterThing {
				r.Data.ThingName = "gg_1"
			}
			return nil
		}
	}
	res, err := f.run(t, false)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != "DeriveParams,PrepareKey,CreateCertificate,RegisterThing,Persist,Verify,Restart" {
		t.Errorf("order %v", seen)
	}
	if res.Data.ThingName != "gg_1" {
		t.Errorf("result thing %q", res.Data.ThingName)
	}
	recs, _, _ := ReadJournal(f.journal)
	if recs[len(recs)-1].State != Done || recs[len(recs)-1].Data.ThingName != "gg_1" {
		t.Errorf("last record %+v, want Done with the thing name", recs[len(recs)-1])
	}
	if !strings.Contains(f.out.String(), "ok    RegisterThing") || !strings.Contains(f.out.String(), "provisioned in") {
		t.Errorf("progress output:\n%s", f.out.String())
	}

	// A second run finds Done and changes nothing.
	f.states[PrepareKey].runs = 0
	res, err = f.run(t, false)
	if err != nil || !res.AlreadyProvisioned || f.states[PrepareKey].runs != 0 {
		t.Fatalf("second run: %+v, %v, PrepareKey ran %d times", res, err, f.states[PrepareKey].runs)
	}
	// --force provisions afresh.
	if res, err = f.run(t, true); err != nil || res.AlreadyProvisioned || f.states[PrepareKey].runs != 1 {
		t.Fatalf("forced run: %+v, %v", res, err)
	}
}

func TestEngineRetriesTransientErrors(t *testing.T) {
	f := newFixture(t)
	f.states[CreateCertificate].fn = func(r *Run) error {
		if f.states[CreateCertificate].runs < 3 {
			return failure.Transient(errors.New("503 ServiceUnavailable"))
		}
		return nil
	}
	if _, err := f.run(t, false); err != nil {
		t.Fatal(err)
	}
	if got := f.states[CreateCertificate].runs; got != 3 {
		t.Errorf("CreateCertificate ran %d times, want 3", got)
	}
	retries := 0
	for _, ev := range f.events {
		if ev.Type == EventRetrying {
			retries++
		}
	}
	if retries != 2 {
		t.Errorf("%d retry events, want 2", retries)
	}
}

func TestEngineGivesUpAtDeadline(t *testing.T) {
	f := newFixture(t)
	f.states[CreateCertificate].fn = func(r *Run) error {
		time.Sleep(50 * time.Millisecond)
		return failure.Transient(errors.New("timed out"))
	}
	_, err := f.run(t, false)
	if err == nil || !strings.Contains(err.Error(), "gave up after") || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err = %v", err)
	}
	if n := f.states[CreateCertificate].runs; n < 2 || n > 40 {
		t.Errorf("ran %d times within a 1s deadline", n)
	}
}

// A backoff longer than the time left does not end the step early: the
// last try comes at the retry deadline, so a fault that clears within it
// is survived.
func TestEngineTriesLastAtDeadline(t *testing.T) {
	f := newFixture(t)
	f.backoff = Backoff{Initial: 10 * time.Second, Max: 10 * time.Second}
	var tries []time.Time
	f.states[CreateCertificate].fn = func(r *Run) error {
		tries = append(tries, time.Now())
		return failure.Transient(errors.New("503 ServiceUnavailable"))
	}
	start := time.Now()
	_, err := f.run(t, false)
	if err == nil || !strings.Contains(err.Error(), "gave up after") {
		t.Fatalf("err = %v", err)
	}
	if len(tries) < 2 {
		t.Fatalf("tried %d times in a 1s deadline with 10s backoffs; want a last try at the deadline", len(tries))
	}
	// The deadline is set as the state starts, a moment before its first
	// try; the last try must not come before it.
	if last := tries[len(tries)-1].Sub(start); last < time.Second-50*time.Millisecond {
		t.Errorf("last try %s after the start; want it at the 1s deadline", last)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("run took %s with a 1s deadline", took)
	}
}

func TestEngineFatalErrorIsJournaledAndResumed(t *testing.T) {
	f := newFixture(t)
	f.states[RegisterThing].fn = func(r *Run) error { return errors.New("403 AccessDenied") }
	f.states[CreateCertificate].fn = func(r *Run) error {
		r.Data.CertificateID, r.Data.OwnershipToken, r.Data.TokenIssuedAt = "c1", "tok", time.Now()
		return nil
	}
	_, err := f.run(t, false)
	if err == nil || !strings.Contains(err.Error(), "RegisterThing: 403 AccessDenied") {
		t.Fatalf("err = %v", err)
	}
	if f.states[RegisterThing].runs != 1 {
		t.Errorf("fatal error retried: %d runs", f.states[RegisterThing].runs)
	}
	recs, _, _ := ReadJournal(f.journal)
	last := recs[len(recs)-1]
	if last.State != Failed || last.FailedState != RegisterThing || last.Error != "403 AccessDenied" {
		t.Fatalf("last record %+v", last)
	}
	// The next run resumes at RegisterThing with the same token: no second
	// certificate.
	f.states[RegisterThing].fn = nil
	if _, err := f.run(t, false); err != nil {
		t.Fatal(err)
	}
	if f.states[CreateCertificate].runs != 1 {
		t.Errorf("CreateCertificate ran %d times, want 1", f.states[CreateCertificate].runs)
	}
}

func TestEngineUnusableTokenGetsNewCertificate(t *testing.T) {
	f := newFixture(t)
	f.states[CreateCertificate].fn = func(r *Run) error {
		r.Data.CertificateID, r.Data.OwnershipToken = "c", "tok"
		return nil
	}
	f.states[RegisterThing].fn = func(r *Run) error {
		if r.Data.OwnershipToken != "tok" {
			t.Errorf("RegisterThing without a token")
		}
		if f.states[RegisterThing].runs == 1 {
			return errors.Join(ErrTokenUnusable, errors.New("400 expired"))
		}
		return nil
	}
	if _, err := f.run(t, false); err != nil {
		t.Fatal(err)
	}
	if f.states[CreateCertificate].runs != 2 || f.states[RegisterThing].runs != 2 {
		t.Errorf("CreateCertificate %d, RegisterThing %d runs; want 2 and 2", f.states[CreateCertificate].runs, f.states[RegisterThing].runs)
	}
}

func TestEngineUsageErrorWritesNothing(t *testing.T) {
	f := newFixture(t)
	f.states[LoadConfig].fn = func(r *Run) error { return failure.Usage("config x: bad") }
	_, err := f.run(t, false)
	if !failure.IsUsage(err) {
		t.Fatalf("err = %v, want a usage error", err)
	}
	if recs, _, _ := ReadJournal(f.journal); len(recs) != 0 {
		t.Errorf("journal written on a config error")
	}
}

func TestMermaidHasEveryTransition(t *testing.T) {
	g, err := Mermaid()
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMachine(Steps(Builtins{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range m.Transitions() {
		for _, src := range e.Src {
			if want := src + " --> " + e.Dst + ": " + e.Name; !strings.Contains(g, want) {
				t.Errorf("diagram lacks %q", want)
			}
		}
	}
	for _, want := range []string{"LoadConfig --> RegisterThing: resume_at_RegisterThing", "RegisterThing --> CreateCertificate: token_unusable", "LoadConfig --> Done: already_provisioned"} {
		if !strings.Contains(g, want) {
			t.Errorf("diagram lacks %q", want)
		}
	}
}

// A step from outside the built-in machine (a vendor's, after
// RegisterThing) runs in its place, journals its own data, and resumes
// with it after a failure, as the built-in steps do.
func TestVendorStepJournaledAndResumed(t *testing.T) {
	f := newFixture(t)
	type vendorData struct{ DeviceID string }
	vendor := &stepState{name: "RegisterWithVendor"}
	vendor.fn = func(r *Run) error {
		var vd vendorData
		found, err := r.Data.Get("RegisterWithVendor", &vd)
		if err != nil {
			return err
		}
		if vendor.runs == 1 {
			if found || r.Data.ThingName != "gg_1" {
				t.Errorf("first run: found %v, thing %q", found, r.Data.ThingName)
			}
			if err := r.Data.Put("RegisterWithVendor", vendorData{DeviceID: "v-42"}); err != nil {
				return err
			}
			return errors.New("vendor backend: 500")
		}
		if !found || vd.DeviceID != "v-42" || !r.Resumed {
			t.Errorf("resumed run: found %v, data %+v, resumed %v", found, vd, r.Resumed)
		}
		return nil
	}
	f.states[RegisterThing].fn = func(r *Run) error { r.Data.ThingName = "gg_1"; return nil }
	st := f.states
	steps := Steps(Builtins{LoadConfig: st[LoadConfig], DeriveParams: st[DeriveParams], PrepareKey: st[PrepareKey], CreateCertificate: st[CreateCertificate],
		RegisterThing: st[RegisterThing], Persist: st[Persist], Verify: st[Verify], Restart: st[Restart]})
	steps, err := InsertAfter(steps, RegisterThing, Step{Name: "RegisterWithVendor", State: vendor, Transition: "vendor_registered"})
	if err != nil {
		t.Fatal(err)
	}
	run := func() error {
		e, err := New(Options{Steps: steps, Backoff: Backoff{Initial: time.Millisecond, Max: time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.Provision(context.Background())
		return err
	}
	if err := run(); err == nil || err.Error() != "RegisterWithVendor: vendor backend: 500" {
		t.Fatalf("first run: %v", err)
	}
	if err := run(); err != nil {
		t.Fatal(err)
	}
	if st[RegisterThing].runs != 1 || st[Persist].runs != 1 || vendor.runs != 2 {
		t.Errorf("runs: RegisterThing %d, vendor %d, Persist %d; want 1, 2, 1", st[RegisterThing].runs, vendor.runs, st[Persist].runs)
	}
	recs, _, _ := ReadJournal(f.journal)
	var order []string
	for _, r := range recs {
		order = append(order, r.State)
	}
	if got := strings.Join(order, ","); got != "DeriveParams,PrepareKey,CreateCertificate,RegisterThing,RegisterWithVendor,Failed,RegisterWithVendor,Persist,Verify,Restart,Done" {
		t.Errorf("journal %s", got)
	}
}

// A machine that cannot work is refused when the engine is made.
func TestNewMachineRefusesBrokenSteps(t *testing.T) {
	base := Steps(Builtins{})
	dup, _ := InsertAfter(base, Persist, Step{Name: PrepareKey})
	badDetour, _ := Replace(base, Step{Name: Persist, Detours: []Detour{{Transition: "x", On: errors.New("x"), To: "Nowhere"}}})
	cases := []struct {
		steps []Step
		want  string
	}{
		{dup, `engine: step "PrepareKey" declared twice`},
		{badDetour, `engine: step "Persist": detour "x" goes to "Nowhere", not a journaled step of the machine`},
		{append(slices.Clone(base), Step{Name: Done}), `engine: step "Done": Done is the machine's own`},
		{append(slices.Clone(base), Step{Name: "Late", EveryRun: true}), `engine: step "Late": only the first step may run on every start`},
	}
	for _, c := range cases {
		if _, err := NewMachine(c.steps); err == nil || err.Error() != c.want {
			t.Errorf("err = %v, want %s", err, c.want)
		}
	}
	if _, err := InsertAfter(base, "Nowhere", Step{Name: "X"}); !errors.Is(err, ErrNoStep) {
		t.Errorf("InsertAfter a missing step: %v", err)
	}
	if _, err := New(Options{Steps: base}); err == nil || err.Error() != "engine: step LoadConfig has no work (State is nil)" {
		t.Errorf("New without work: %v", err)
	}
}

// An interrupted run (its context cancelled by SIGINT or SIGTERM) is not a
// failed one: no Failed record, the journal stays in the state entered, and
// the next run resumes there.
func TestInterruptedRunJournalsNoFailure(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	f.states[Persist].fn = func(r *Run) error {
		cancel()
		return fmt.Errorf("writing files: %w", ctx.Err())
	}
	st := f.states
	backoff := f.backoff
	if backoff == (Backoff{}) {
		backoff = Backoff{Initial: time.Millisecond, Max: 4 * time.Millisecond}
	}
	e, err := New(Options{
		Steps: Steps(Builtins{LoadConfig: st[LoadConfig], DeriveParams: st[DeriveParams], PrepareKey: st[PrepareKey], CreateCertificate: st[CreateCertificate],
			RegisterThing: st[RegisterThing], Persist: st[Persist], Verify: st[Verify], Restart: st[Restart]}),
		Subscribers: []Subscriber{&Progress{W: &f.out}},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Provision(ctx)
	if !errors.Is(err, ErrInterrupted) || err.Error() != "Persist: interrupted: run again to resume" {
		t.Fatalf("err = %v", err)
	}
	recs, _, _ := ReadJournal(f.journal)
	if last := recs[len(recs)-1]; last.State != Persist {
		t.Errorf("last record %s, want Persist: an interruption journals nothing", last.State)
	}
	if out := f.out.String(); strings.Contains(out, "FAIL") || !strings.Contains(out, "stop  Persist") {
		t.Errorf("progress:\n%s", out)
	}
	f.states[Persist].fn = nil
	if _, err := f.run(t, false); err != nil {
		t.Fatal(err)
	}
	if st[Persist].runs != 2 || st[RegisterThing].runs != 1 {
		t.Errorf("after the interruption: Persist ran %d times, RegisterThing %d; want 2 and 1", st[Persist].runs, st[RegisterThing].runs)
	}
}

// Runs that never reached the cloud do not count toward the cap on
// entering a state without progress: a device offline for more boots
// than the cap still provisions when the network returns.
func TestUnreachedCloudDoesNotCountTowardTheCap(t *testing.T) {
	f := newFixture(t)
	offline := true
	f.states[CreateCertificate].fn = func(r *Run) error {
		if offline {
			return failure.Unreached(failure.Transient(errors.New("dial tcp: connection refused")))
		}
		return nil
	}
	st := f.states
	run := func() error {
		e, err := New(Options{
			Steps: Steps(Builtins{LoadConfig: st[LoadConfig], DeriveParams: st[DeriveParams], PrepareKey: st[PrepareKey], CreateCertificate: st[CreateCertificate],
				RegisterThing: st[RegisterThing], Persist: st[Persist], Verify: st[Verify], Restart: st[Restart]}),
			Backoff: Backoff{Initial: time.Millisecond, Max: time.Millisecond}, MaxAttempts: 3,
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.Provision(context.Background())
		return err
	}
	for boot := 1; boot <= 6; boot++ {
		if err := run(); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("boot %d offline: %v", boot, err)
		}
	}
	offline = false
	if err := run(); err != nil {
		t.Fatalf("back online after 6 offline boots with a cap of 3: %v", err)
	}

	// A try that did reach the cloud still counts.
	g := newFixture(t)
	g.states[CreateCertificate].fn = func(r *Run) error { return errors.New("403 AccessDenied") }
	f = g
	st = g.states
	var last error
	for boot := 1; boot <= 4; boot++ {
		last = run()
	}
	if last == nil || !strings.Contains(last.Error(), "entered 3 times without progress") {
		t.Errorf("fourth boot after three refusals: %v, want the cap", last)
	}
}
