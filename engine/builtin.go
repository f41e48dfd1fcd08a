package engine

import (
	"fmt"
	"time"
)

// Builtins is the work of the built-in steps. Package states provides it
// (states.Builtins); a vendor build may replace any of them.
type Builtins struct {
	LoadConfig, DeriveParams, PrepareKey, CreateCertificate, RegisterThing, Persist, Verify, Restart State
}

// Steps declares the built-in machine: each step's name, transition,
// detours and resume rule, in the order a run takes them. The transition
// names are journaled; keep them stable.
func Steps(b Builtins) []Step {
	return []Step{
		{Name: LoadConfig, State: b.LoadConfig, Transition: "config_loaded", EveryRun: true},
		{Name: DeriveParams, State: b.DeriveParams, Transition: "params_derived",
			// No parameters reached the journal and nothing was sent with
			// them: derive them again. From here on they are journaled and
			// a resumed run sends exactly these, never deriving them again.
			Resume: ResumeHere(DeriveParams, "template parameters not derived yet")},
		{Name: PrepareKey, State: b.PrepareKey, Transition: "key_ready",
			// The key may or may not have been written; PrepareKey reuses
			// one that exists.
			Resume: ResumeHere(PrepareKey, "key not confirmed yet")},
		{Name: CreateCertificate, State: b.CreateCertificate, Transition: "certificate_issued",
			// No certificate was journaled, so none is known to exist; one
			// the cloud issued but we never heard of stays pending and is
			// deleted by the cloud when its token expires.
			Resume: ResumeHere(CreateCertificate, "no certificate received yet")},
		{Name: RegisterThing, State: b.RegisterThing, Transition: "thing_registered",
			// The token expired or the cloud no longer honours it: get a
			// new certificate. The old one may have been activated by a
			// registration whose answer was lost; CreateCertificate
			// checks it is not ACTIVE before asking.
			Detours: []Detour{{Transition: "token_unusable", On: ErrTokenUnusable, To: CreateCertificate, Max: 2, Forget: (*Data).ForgetCertificate}},
			Resume:  resumeRegisterThing},
		{Name: Persist, State: b.Persist, Transition: "persisted",
			// Registered: the cloud side is done. Writing files is
			// idempotent.
			Resume: ResumeHere(Persist, "thing registered, files not confirmed written")},
		{Name: Verify, State: b.Verify, Transition: "verified",
			// Connecting again proves no less; a claim retirement cut
			// short is finished (a claim file already gone is done).
			// Services are not restarted onto an identity not seen to
			// work.
			Resume: ResumeHere(Verify, "files written, new certificate not confirmed to connect")},
		{Name: Restart, State: b.Restart, Transition: "restarted",
			// Files are written; restarting services again is harmless.
			Resume: ResumeHere(Restart, "files written, services not confirmed restarted")},
	}
}

// resumeRegisterThing registers with a journaled token while it is still
// good, rather than ask for a second certificate.
func resumeRegisterThing(in ResumeInput, d *Data) (string, string) {
	age := d.TokenAge(in.Now)
	if d.OwnershipToken != "" && age >= 0 && age < in.TokenLifetime-in.TokenMargin {
		return RegisterThing, fmt.Sprintf("reusing ownership token issued %s ago", age.Round(time.Second))
	}
	// An expired token cannot register; ask for a new certificate. The
	// old one may already be ACTIVE, if the last run's RegisterThing went
	// through unseen: CreateCertificate checks before asking.
	d.ForgetCertificate()
	why := fmt.Sprintf("ownership token issued %s ago is too old to use", age.Round(time.Second))
	if d.PriorCertificatePEM != "" {
		why += "; its certificate is checked for activation first"
	}
	return CreateCertificate, why
}

// Mermaid draws the built-in machine.
func Mermaid() (string, error) {
	m, err := NewMachine(Steps(Builtins{}))
	if err != nil {
		return "", err
	}
	return m.Mermaid()
}
