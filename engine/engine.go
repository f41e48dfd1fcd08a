// Package engine runs provisioning as a state machine whose every transition
// is journaled before the next state runs, so a run killed at any point
// resumes where it stopped. It owns the transition table, the journal, the
// resume rules, retries and events; the states themselves live in package
// states and know nothing of one another.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/internal/faultpoint"
	"github.com/fleetprov/fleetprov/plugins/hook"
)

// State is the work of one step of provisioning (see Step).
type State interface {
	// Run does the work. It reads and fills r.Data. An error marked
	// failure.Transient is retried until the retry deadline.
	Run(ctx context.Context, r *Run) error
}

// Run is what a state sees of the run it is part of.
type Run struct {
	Config *config.Config
	Data   *Data
	Log    *slog.Logger
	Now    func() time.Time
	// Resumed is true when this state was entered from the journal (the
	// previous run stopped in it), so it may find its own work half done.
	Resumed bool
	// Fresh is true when the run provisions afresh (no journal, or
	// --force), or resumes one that has not made its key yet
	// (Data.NewKey): there is no earlier work of this identity to reuse.
	Fresh bool
}

// ErrInterrupted is returned (wrapped) when the run's context was
// cancelled (SIGINT, SIGTERM) while a state ran: nothing failed and the
// journal is as it was, so the next run resumes where this one stopped.
var ErrInterrupted = errors.New("interrupted: run again to resume")

// ErrTokenUnusable is returned (wrapped) by RegisterThing when the cloud
// refuses the ownership token as expired or unknown: the engine then gets a
// new certificate instead of failing.
var ErrTokenUnusable = errors.New("certificate ownership token is no longer usable")

// Backoff shapes the wait between retries: exponential from Initial, capped
// at Max, with full jitter so a fleet that lost its uplink together does not
// retry in step.
type Backoff struct {
	Initial, Max time.Duration
}

func (b Backoff) wait(try int) time.Duration {
	d := b.Initial
	for i := 1; i < try && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return time.Duration(rand.Int64N(int64(d))) + 1
}

// DefaultBackoff is used when Options.Backoff is zero.
var DefaultBackoff = Backoff{Initial: time.Second, Max: 30 * time.Second}

// Options configure an Engine.
type Options struct {
	// Steps is the machine, in the order a run takes it: Steps(Builtins)
	// for the built-in one, edited with InsertAfter, Replace and Remove.
	Steps       []Step
	Subscribers []Subscriber
	Logger      *slog.Logger
	Now         func() time.Time
	Force       bool
	Backoff     Backoff
	// MaxAttempts caps how often a state is entered across runs without
	// progress; 0 means 10.
	MaxAttempts int
	// Locked, if set, is called once the journal is locked and before any
	// step runs: the one moment no other run can be writing this device's
	// files. The CLI removes temporary files killed runs left there.
	Locked func(cfg *config.Config)

	// Hooks are asked, in order, before each journaled step runs (Enter)
	// and after it succeeded but before its result is journaled (Leave),
	// and told when a step is retried, when it fails and when the run is
	// done. A hook with a Name() string method is named by it in errors.
	// The EveryRun first step (LoadConfig) runs before any hook is asked:
	// hooks may be configured by the config it loads.
	Hooks []hook.Hook
}

// Result is the outcome of a successful Run.
type Result struct {
	AlreadyProvisioned bool
	Reason             string
	Data               Data
	Config             *config.Config
}

// Engine runs one provisioning.
type Engine struct {
	opts    Options
	machine *Machine
}

// New checks that opts declares a whole machine whose every step has its
// work.
func New(opts Options) (*Engine, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Backoff == (Backoff{}) {
		opts.Backoff = DefaultBackoff
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = 10
	}
	m, err := NewMachine(opts.Steps)
	if err != nil {
		return nil, err
	}
	if first, ok := m.everyRun(); !ok || first.Name != LoadConfig {
		// The journal's path is in the config, so the config is loaded
		// before anything is journaled.
		return nil, fmt.Errorf("engine: the first step must be %s, running on every start", LoadConfig)
	}
	for _, s := range m.steps {
		if s.State == nil {
			return nil, fmt.Errorf("engine: step %s has no work (State is nil)", s.Name)
		}
	}
	return &Engine{opts: opts, machine: m}, nil
}

func (e *Engine) emit(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = e.opts.Now()
	}
	for _, s := range e.opts.Subscribers {
		s.HandleEvent(ev)
	}
}

// Provision runs the machine: it loads the config, reads the journal,
// resumes where the last run stopped and runs steps until Done. Usage
// errors (bad config) are returned before anything is written.
func (e *Engine) Provision(ctx context.Context) (*Result, error) {
	started := e.opts.Now()
	data := &Data{}
	r := &Run{Data: data, Log: e.opts.Logger, Now: e.opts.Now}
	m := e.machine
	first, _ := m.everyRun()
	f, err := m.newFSM(first.Name)
	if err != nil {
		return nil, err
	}

	// The first step runs before the journal exists: the journal's path is
	// in the config. It runs on every start, so it needs no record.
	e.emit(Event{Type: EventEntered, State: first.Name, Attempt: 1})
	t0 := e.opts.Now()
	if err := first.State.Run(ctx, r); err != nil {
		e.emit(Event{Type: EventFailed, State: first.Name, Duration: e.opts.Now().Sub(t0), Err: err})
		return nil, err
	}
	e.emit(Event{Type: EventLeft, State: first.Name, Duration: e.opts.Now().Sub(t0)})
	cfg := r.Config
	if cfg == nil {
		return nil, fmt.Errorf("engine: %s produced no config", first.Name)
	}

	j, err := OpenJournal(cfg.JournalPath)
	if err != nil {
		return nil, err
	}
	defer j.Close()
	if n := j.Skipped(); n > 0 {
		e.opts.Logger.Warn("ignored torn or corrupt journal records", "journal", j.Path(), "count", n)
	}
	if e.opts.Locked != nil {
		e.opts.Locked(cfg)
	}

	plan, err := m.Resume(ResumeInput{
		Last: j.Last(), Now: e.opts.Now(),
		TokenLifetime: cfg.TokenLifetime, TokenMargin: cfg.TokenMargin,
		Force: e.opts.Force, ConfigProvisioned: config.IsProvisioned(cfg),
		MaxAttempts: e.opts.MaxAttempts,
	})
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w", j.Path(), err)
	}
	if plan.AlreadyProvisioned {
		if _, err := fire(f, TransitionAlreadyProvisioned); err != nil {
			return nil, err
		}
		e.emit(Event{Type: EventAlreadyProvisioned, Reason: plan.Reason, Data: &plan.Data})
		return &Result{AlreadyProvisioned: true, Reason: plan.Reason, Data: plan.Data, Config: cfg}, nil
	}
	if plan.Resumed {
		e.emit(Event{Type: EventResumed, State: plan.Start, Reason: plan.Reason})
	}
	*data = plan.Data
	if !plan.Resumed {
		// Journaled with the first record, so a run killed before the
		// new key exists still replaces the old one when resumed.
		data.NewKey = true
	}
	r.Fresh = !plan.Resumed || data.NewKey

	// Into the machine at the planned step, along one of its edges.
	transition := first.transition()
	if plan.Start != m.next(first.Name) {
		transition = transitionResumeAt + plan.Start
	}
	state, err := fire(f, transition)
	if err != nil {
		return nil, err
	}
	attempt, resumed := plan.Attempt, plan.Resumed
	detours := map[string]int{}
	for state != Done {
		step, _ := m.step(state)
		// Save before acting: the entry is on disk before the state runs.
		if err := j.Append(Record{State: state, Time: e.opts.Now(), Attempt: attempt, Event: transition, Data: *data}); err != nil {
			return nil, err
		}
		e.emit(Event{Type: EventEntered, State: state, Attempt: attempt})
		// A test may pause here to act while the process is inside state.
		if err := faultpoint.HitContext(ctx, faultpoint.StateEntered, state); err != nil {
			return nil, e.fail(ctx, j, state, attempt, true, data, 0, err)
		}
		r.Resumed = resumed
		var entered Data
		if len(e.opts.Hooks) > 0 {
			entered = cloneData(*data)
		}
		t0 := e.opts.Now()
		ph, err := e.runState(ctx, step, r, attempt, cfg.RetryDeadline)
		dur := e.opts.Now().Sub(t0)
		d, detour := Detour{}, false
		if err != nil && ph == phaseRun {
			d, detour = detourFor(step, err, detours)
		}
		left := Event{Type: EventLeft, State: state, Duration: dur}
		switch {
		case err == nil:
			transition = step.transition()
		case detour:
			detours[d.Transition]++
			if d.Forget != nil {
				d.Forget(data)
			}
			transition = d.Transition
			// The step did not succeed: say so, and where the run goes.
			left.Err, left.Reason = err, d.To
		case ph == phaseEnter:
			// The step never ran: this entry is no progress and no
			// attempt, so a hook that vetoes at every boot does not use up
			// MaxAttempts.
			return nil, e.fail(ctx, j, state, attempt, false, data, dur, err)
		case ph == phaseLeave:
			// A hook refused the result: journal the data the step was
			// entered with, so the next run does the step again.
			return nil, e.fail(ctx, j, state, attempt, true, &entered, dur, err)
		default:
			return nil, e.fail(ctx, j, state, attempt, true, data, dur, err)
		}
		e.emit(left)
		if state, err = fire(f, transition); err != nil {
			return nil, err
		}
		attempt, resumed = 1, false
	}
	if err := j.Append(Record{State: Done, Time: e.opts.Now(), Attempt: 1, Event: transition, Data: *data}); err != nil {
		return nil, err
	}
	e.emit(Event{Type: EventDone, State: Done, Duration: e.opts.Now().Sub(started), Data: data})
	e.report(ctx, hook.Done, Done, 1, data, nil)
	return &Result{Data: *data, Config: cfg}, nil
}

// detourFor returns the detour err takes out of step, if it has one left
// in this run.
func detourFor(step Step, err error, taken map[string]int) (Detour, bool) {
	for _, d := range step.Detours {
		limit := max(d.Max, 1)
		if errors.Is(err, d.On) && taken[d.Transition] < limit {
			return d, true
		}
	}
	return Detour{}, false
}

// fail journals the failure and reports it. The record keeps the state that
// failed so the next run resumes there. ran says whether the step ran: if
// not (an Enter hook stopped it), this entry is not counted against
// MaxAttempts.
func (e *Engine) fail(ctx context.Context, j *Journal, state string, attempt int, ran bool, data *Data, dur time.Duration, cause error) error {
	if ctx.Err() != nil {
		// Interrupted (SIGINT, SIGTERM): not a failure. The journal
		// stays as it was, in the state entered, so the next run resumes
		// there exactly as after a power cut; hooks still hear of it.
		e.emit(Event{Type: EventInterrupted, State: state, Duration: dur, Err: cause})
		e.report(ctx, hook.Failed, state, attempt, data, cause)
		return &StateError{State: state, Err: ErrInterrupted}
	}
	e.emit(Event{Type: EventFailed, State: state, Duration: dur, Err: cause})
	entries := attempt
	if !ran || errors.Is(cause, failure.ErrUnreached) {
		// Not an entry that counts toward MaxAttempts: a vetoed Enter
		// did nothing, and a try that never reached the cloud changed
		// nothing there (an offline device must not lock itself out).
		entries--
	}
	rec := Record{State: Failed, Time: e.opts.Now(), Attempt: entries, Event: TransitionFail, FailedState: state, Error: failure.Line(cause), Data: *data}
	if err := j.Append(rec); err != nil {
		return errors.Join(cause, err)
	}
	// Hooks hear of the failure once it is journaled, so a hook that hangs
	// or kills the process cannot lose it.
	e.report(ctx, hook.Failed, state, attempt, data, cause)
	return &StateError{State: state, Err: cause}
}

// phase says how far a step got: its Enter hooks, its work, its Leave
// hooks.
type phase int

const (
	phaseEnter phase = iota
	phaseRun
	phaseLeave
)

// runState asks the hooks to enter, does the step's work, and asks the
// hooks to leave. Transient errors of each, and hooks asking to retry
// later, are retried with backoff until the step's deadline. It returns
// the phase it stopped in.
func (e *Engine) runState(ctx context.Context, step Step, r *Run, attempt int, deadline time.Duration) (phase, error) {
	name := step.Name
	giveUp := e.opts.Now().Add(deadline)
	if err := e.retry(ctx, name, giveUp, deadline, r.Data, func(int) error {
		return e.gate(ctx, hook.Enter, name, attempt, r.Data)
	}); err != nil {
		return phaseEnter, err
	}
	if err := e.retry(ctx, name, giveUp, deadline, r.Data, func(try int) error {
		if try > 1 {
			// A retried state runs on its own earlier work, as after a
			// crash.
			r.Resumed = true
		}
		return step.State.Run(ctx, r)
	}); err != nil {
		return phaseRun, err
	}
	if err := e.retry(ctx, name, giveUp, deadline, r.Data, func(int) error {
		return e.gate(ctx, hook.Leave, name, attempt, r.Data)
	}); err != nil {
		return phaseLeave, err
	}
	return phaseLeave, nil
}

// retry calls fn until it succeeds, fails for good, or giveUp has passed.
func (e *Engine) retry(ctx context.Context, name string, giveUp time.Time, deadline time.Duration, data *Data, fn func(try int) error) error {
	for try := 1; ; try++ {
		err := fn(try)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w", err)
		}
		if !failure.IsTransient(err) {
			return err
		}
		left := giveUp.Sub(e.opts.Now())
		if left <= 0 {
			return fmt.Errorf("gave up after %d attempts over %s (retryDeadline): %w", try, deadline, err)
		}
		// A backoff that would overshoot the deadline is cut short to
		// make the last try at the deadline: giving up as soon as the
		// drawn wait is too long would waste up to Backoff.Max of the
		// time the step was given, in which the fault may clear.
		wait := min(e.opts.Backoff.wait(try), left)
		e.emit(Event{Type: EventRetrying, State: name, Attempt: try, Wait: wait, Err: err})
		e.report(ctx, hook.Retrying, name, try, data, err)
		if err := sleep(ctx, wait); err != nil {
			return fmt.Errorf("interrupted: %w", err)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
