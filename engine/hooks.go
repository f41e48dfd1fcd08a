package engine

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/hook"
)

// secretDataFields are the JSON fields of Data that no hook may see. The
// ownership token lets whoever holds it register a thing with the device's
// certificate, so it stays between the journal (0600) and the cloud.
var secretDataFields = []string{"certificateOwnershipToken"}

// VetoError is a hook's veto of entering or leaving a state. The run stops
// at that state; the next run starts there again.
type VetoError struct {
	Hook   string
	Kind   hook.Kind // hook.Enter or hook.Leave
	State  string
	Reason string
}

func (e *VetoError) Error() string {
	return fmt.Sprintf("%s vetoed by %s: %s", e.Kind, e.Hook, e.Reason)
}

// DeferredError is a hook's request to try entering or leaving a state
// again later. The engine wraps it in failure.Transient, so it is retried
// with backoff until retryDeadline, like a network error.
type DeferredError struct {
	Hook   string
	Kind   hook.Kind
	State  string
	Reason string
}

func (e *DeferredError) Error() string {
	return fmt.Sprintf("%s deferred by %s: %s", e.Kind, e.Hook, e.Reason)
}

// HookError is a hook that could not answer (it crashed, timed out or
// returned an error). It unwraps to the hook's error, so a hook decides
// whether retrying can help by marking its error failure.Transient.
type HookError struct {
	Hook string
	Kind hook.Kind
	Err  error
}

func (e *HookError) Error() string {
	return fmt.Sprintf("hook %s failed at %s: %v", e.Hook, e.Kind, e.Err)
}
func (e *HookError) Unwrap() error { return e.Err }

// hookName names a hook in errors and logs: by its Name method if it has
// one, else by its place in Options.Hooks.
func hookName(i int, h hook.Hook) string {
	if n, ok := h.(interface{ Name() string }); ok && n.Name() != "" {
		return n.Name()
	}
	return fmt.Sprintf("hook %d (%T)", i+1, h)
}

// hookData is d as hooks see it: the journaled fields as JSON object
// fields, the secret ones removed. Each hook gets its own copy, so one hook
// cannot change what the next one sees.
func hookData(d *Data) map[string]any {
	if d == nil {
		return nil
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	for _, f := range secretDataFields {
		delete(m, f)
	}
	return m
}

// cloneData is a deep copy of d, so that a result a hook vetoes can be
// dropped while the data the state was entered with is journaled.
func cloneData(d Data) Data {
	var c Data
	b, err := json.Marshal(d)
	if err != nil || json.Unmarshal(b, &c) != nil {
		return d
	}
	return c
}

func (e *Engine) hookEvent(kind hook.Kind, state string, attempt int, data *Data, cause error) hook.Event {
	ev := hook.Event{Kind: kind, State: state, Time: e.opts.Now(), Attempt: attempt, Data: hookData(data)}
	if cause != nil {
		ev.Error = cause.Error()
	}
	return ev
}

// gate asks each hook in turn whether a state may be entered or left. The
// first hook that does not say Proceed decides; later hooks are not asked.
func (e *Engine) gate(ctx context.Context, kind hook.Kind, state string, attempt int, data *Data) error {
	for i, h := range e.opts.Hooks {
		name := hookName(i, h)
		ev := e.hookEvent(kind, state, attempt, data, nil)
		resp, err := h.Notify(ctx, &hook.NotifyRequest{Event: ev})
		if err != nil {
			return &HookError{Hook: name, Kind: kind, Err: err}
		}
		if resp == nil {
			continue
		}
		switch resp.Verdict {
		case hook.Proceed:
		case hook.Veto:
			return &VetoError{Hook: name, Kind: kind, State: state, Reason: reasonOr(resp.Reason, "no reason given")}
		case hook.RetryLater:
			return failure.Transient(&DeferredError{Hook: name, Kind: kind, State: state, Reason: reasonOr(resp.Reason, "asked to retry later")})
		default:
			return &HookError{Hook: name, Kind: kind, Err: fmt.Errorf("unknown verdict %q", resp.Verdict)}
		}
	}
	return nil
}

// report tells every hook what happened. Their answers cannot change it:
// a hook's error is logged and the run goes on.
func (e *Engine) report(ctx context.Context, kind hook.Kind, state string, attempt int, data *Data, cause error) {
	// Failed and Done are reported as the run ends, maybe because it was
	// interrupted; hooks still hear of it, each bounded by its own timeout.
	ctx = context.WithoutCancel(ctx)
	for i, h := range e.opts.Hooks {
		ev := e.hookEvent(kind, state, attempt, data, cause)
		if _, err := h.Notify(ctx, &hook.NotifyRequest{Event: ev}); err != nil {
			e.opts.Logger.Warn("hook failed", "hook", hookName(i, h), "event", string(kind), "state", state, "err", err)
		}
	}
}

func reasonOr(reason, def string) string {
	if reason == "" {
		return def
	}
	return reason
}
