package engine

import (
	"fmt"
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

// Resume decides where a run starts. These are all the resume rules; each
// case says why.
func Resume(in ResumeInput) (Plan, error) {
	last := in.Last
	if in.Force {
		// The user asked for a new identity: start over, whatever the
		// journal says, parameters included. PrepareKey keeps the old key
		// as a backup.
		return Plan{Start: DeriveParams, Attempt: 1, Reason: "--force: provisioning afresh"}, nil
	}
	if last == nil {
		if in.ConfigProvisioned {
			// Provisioned before fleetprov kept a journal (or by Greengrass
			// lite's own tool): the config already has a certificate.
			return Plan{AlreadyProvisioned: true, Reason: "config already names a device certificate (system.certificateFilePath)"}, nil
		}
		return Plan{Start: DeriveParams, Attempt: 1, Reason: "no journal: provisioning afresh"}, nil
	}

	state, why := last.State, ""
	if state == Failed {
		// A new run is the user's (or the boot's) retry: go back to the
		// state that failed, under the same rules as if it had been killed
		// there.
		state, why = last.FailedState, fmt.Sprintf("last run failed in %s: %s; ", last.FailedState, last.Error)
	}
	data := last.Data
	plan := Plan{Data: data, Resumed: true}
	switch state {
	case Done:
		// Nothing left to do; running again must not make a second
		// certificate.
		plan.AlreadyProvisioned = true
		plan.Reason = "journal says provisioning finished"
		return plan, nil
	case LoadConfig, "":
		// Config is loaded on every run; nothing was done yet.
		plan.Start, plan.Reason = DeriveParams, why+"nothing done yet"
	case DeriveParams:
		// No parameters reached the journal and nothing was sent with
		// them: derive them again. From here on they are journaled and a
		// resumed run sends exactly these, never deriving them again.
		plan.Start, plan.Reason = DeriveParams, why+"template parameters not derived yet"
	case PrepareKey:
		// The key may or may not have been written; PrepareKey reuses one
		// that exists.
		plan.Start, plan.Reason = PrepareKey, why+"key not confirmed yet"
	case CreateCertificate:
		// No certificate was journaled, so none is known to exist; a
		// certificate the cloud issued but we never heard of stays pending
		// and is deleted by the cloud when its token expires.
		plan.Start, plan.Reason = CreateCertificate, why+"no certificate received yet"
	case RegisterThing:
		age := data.TokenAge(in.Now)
		if data.OwnershipToken != "" && age >= 0 && age < in.TokenLifetime-in.TokenMargin {
			// The token is still good: register with it rather than ask
			// for a second certificate.
			plan.Start = RegisterThing
			plan.Reason = fmt.Sprintf("%sreusing ownership token issued %s ago", why, age.Round(time.Second))
		} else {
			// The certificate behind an expired token can never be
			// activated; the cloud deletes it. Ask for a new one.
			plan.Data.forgetCertificate()
			plan.Start = CreateCertificate
			plan.Reason = fmt.Sprintf("%sownership token issued %s ago is too old to use", why, age.Round(time.Second))
		}
	case Persist:
		// Registered: the cloud side is done. Writing files is idempotent.
		plan.Start, plan.Reason = Persist, why+"thing registered, files not confirmed written"
	case Restart:
		// Files are written; restarting services again is harmless.
		plan.Start, plan.Reason = Restart, why+"files written, services not confirmed restarted"
	default:
		return Plan{}, fmt.Errorf("journal names unknown state %q: run `fleetprov reset` to start over", state)
	}
	plan.Attempt = 1
	if plan.Start == state {
		plan.Attempt = last.Attempt + 1
	}
	if in.MaxAttempts > 0 && plan.Attempt > in.MaxAttempts {
		return Plan{}, fmt.Errorf("state %s was entered %d times without progress; see `fleetprov status`, fix the cause, then run `fleetprov reset`", plan.Start, plan.Attempt-1)
	}
	return plan, nil
}
