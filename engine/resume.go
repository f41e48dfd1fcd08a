package engine

import (
	"fmt"
	"math"
	"time"
)

// Plan says where a run starts and why.
type Plan struct {
	// Start is the state to enter. When AlreadyProvisioned is set there is
	// nothing to run.
	Start              string
	Data               Data
	Attempt            int
	Resumed            bool
	AlreadyProvisioned bool
	Reason             string
}

// ResumeInput is what the resume decision depends on.
type ResumeInput struct {
	Last *Record
	Now  time.Time
	// TokenLifetime is how long the cloud honours an ownership token (1 h
	// at AWS); TokenMargin is kept in hand so a token is not presented
	// moments before it expires.
	TokenLifetime, TokenMargin time.Duration
	// Force provisions afresh even when already provisioned.
	Force bool
	// ConfigProvisioned is Greengrass nucleus lite's own test: the config
	// already names a device certificate.
	ConfigProvisioned bool
	// MaxAttempts caps how often one state may be entered across runs
	// without progress, so a device in a reboot loop stops hammering the
	// cloud. 0 means no cap.
	MaxAttempts int
}

// Resume decides where a run starts. The rules that hold for every
// machine are here, each with why; what is particular to a step is its
// ResumeRule, declared with it.
func (m *Machine) Resume(in ResumeInput) (Plan, error) {
	last := in.Last
	first := m.firstJournaled()
	if in.Force {
		// The user asked for a new identity: start over, whatever the
		// journal says, parameters included. PrepareKey keeps the old key
		// as a backup.
		return Plan{Start: first, Attempt: 1, Reason: "--force: provisioning afresh"}, nil
	}
	if last == nil {
		if in.ConfigProvisioned {
			// Provisioned before fleetprov kept a journal (or by Greengrass
			// lite's own tool): the config already has a certificate.
			return Plan{AlreadyProvisioned: true, Reason: "config already names a device certificate (system.certificateFilePath)"}, nil
		}
		return Plan{Start: first, Attempt: 1, Reason: "no journal: provisioning afresh"}, nil
	}

	if last.Format > RecordFormat {
		return Plan{}, fmt.Errorf("the last record (%d) was written by fleetprov %s in record format %d, and this fleetprov (%s) reads format %d at most: run that version or a newer one, or `fleetprov reset` to start over", last.Seq, writerOf(last), last.Format, Version(), RecordFormat)
	}
	state, why := last.State, ""
	if state == Failed {
		// A new run is the user's (or the boot's) retry: go back to the
		// state that failed, under the same rules as if it had been killed
		// there.
		state, why = last.FailedState, fmt.Sprintf("last run failed in %s: %s; ", last.FailedState, last.Error)
	}
	if to, ok := Retired[state]; ok {
		// A name devices in the field may still hold: resume where its
		// work now lives.
		state = to
	}
	plan := Plan{Data: last.Data, Resumed: true}
	step, known := m.step(state)
	switch {
	case state == Done:
		// Nothing left to do; running again must not make a second
		// certificate.
		plan.AlreadyProvisioned = true
		plan.Reason = "journal says provisioning finished"
		return plan, nil
	case state == "" || (known && step.EveryRun):
		// It runs on every start; nothing after it was done yet.
		plan.Start, plan.Reason = first, why+"nothing done yet"
	case !known:
		return Plan{}, fmt.Errorf("journal names state %q, which this build of fleetprov (%s) does not have; it was written by fleetprov %s: run the build that wrote it, or `fleetprov reset` to start over", state, Version(), writerOf(last))
	default:
		rule := step.Resume
		if rule == nil {
			rule = ResumeHere(state, "stopped here")
		}
		start, reason := rule(in, &plan.Data)
		if s, ok := m.step(start); !ok || s.EveryRun {
			return Plan{}, fmt.Errorf("engine: step %s resumes at %q, not a journaled step of the machine", state, start)
		}
		plan.Start, plan.Reason = start, why+reason
	}
	plan.Attempt = 1
	if plan.Start == state {
		// Clamped: a whole record may still hold any number (written by
		// hand or by another build), and a count that wrapped round
		// would slip past the cap below.
		plan.Attempt = min(max(last.Attempt, 0), math.MaxInt32) + 1
	}
	if in.MaxAttempts > 0 && plan.Attempt > in.MaxAttempts {
		return Plan{}, fmt.Errorf("state %s was entered %d times without progress; see `fleetprov status`, fix the cause, then run `fleetprov reset`", plan.Start, plan.Attempt-1)
	}
	return plan, nil
}

// writerOf names the fleetprov that wrote a record, for messages.
func writerOf(r *Record) string {
	if r.Writer == "" {
		return "of an earlier version (before records named their writer)"
	}
	return r.Writer
}
