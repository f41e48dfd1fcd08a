// Package hook lets code outside fleetprov watch a provisioning run and
// take part in it: a Hook receives every engine event (a state entered,
// left, retrying, failed; the run done) and, before a state is entered and
// before it is left, may veto the step with a reason or ask for it to be
// retried later. State scripts (executables in a directory, named
// <State>_<Enter|Leave|Error>_<NN>) and go-plugin plugins are both Hooks.
package hook

import (
	"context"
	"time"
)

// Kind says what happened, or is about to.
type Kind string

// Event kinds. Enter and Leave are asked before the step and may be vetoed;
// the others report what already happened.
const (
	Enter    Kind = "enter"    // the state is about to run
	Leave    Kind = "leave"    // the state ran and its result is about to be journaled
	Retrying Kind = "retrying" // the state failed transiently and will run again
	Failed   Kind = "failed"   // the state failed; the run stops
	Done     Kind = "done"     // the device is provisioned
)

// Event is one engine event as a hook sees it. It carries the journaled
// data of the run with secrets removed: no ownership token, no private key.
type Event struct {
	Kind  Kind      `json:"kind"`
	State string    `json:"state"`
	Time  time.Time `json:"time"`
	// Attempt counts entries of State across runs (Enter) or tries within
	// this run (Retrying).
	Attempt int `json:"attempt"`
	// Error is the failure, for Retrying and Failed.
	Error string `json:"error,omitempty"`
	// Data is the run's journaled data without secrets, as JSON object
	// fields (thingName, certificateId, templateName, ...).
	Data map[string]any `json:"data,omitempty"`
}

// NotifyRequest carries one event to a hook.
type NotifyRequest struct {
	Event Event
}

// Verdict is a hook's answer. Only answers to Enter and Leave count; for
// other kinds the engine ignores it.
type Verdict string

const (
	// Proceed lets the step go on.
	Proceed Verdict = ""
	// Veto stops the run: it fails with the reason, exit 1, and the
	// journal keeps where it stopped, so the next run tries again.
	Veto Verdict = "veto"
	// RetryLater makes the step a transient failure: the engine retries
	// it with backoff, as it does a network error.
	RetryLater Verdict = "retry-later"
)

// NotifyResponse is a hook's answer to one event.
type NotifyResponse struct {
	Verdict Verdict
	// Reason says why, for Veto and RetryLater; it ends up in the error
	// the user sees.
	Reason string
}

// Hook takes part in provisioning runs.
type Hook interface {
	Notify(ctx context.Context, req *NotifyRequest) (*NotifyResponse, error)
}
