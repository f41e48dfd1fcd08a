// Package hooktest is the conformance suite for the Hook boundary: Mirror
// is a hook with fully specified answers, and Run checks that a Hook
// (Mirror in-process, or Mirror served by a plugin) gives exactly those.
package hooktest

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/hook"
)

// Mirror answers every event with its Reason set to the event as JSON, and
// the verdict named by the event's data key "verdict". Data key "error"
// makes it fail with that text; "transient" fail transiently.
type Mirror struct{}

var _ hook.Hook = Mirror{}

func (Mirror) Notify(_ context.Context, req *hook.NotifyRequest) (*hook.NotifyResponse, error) {
	if msg, ok := req.Event.Data["error"].(string); ok {
		return nil, errors.New(msg)
	}
	if msg, ok := req.Event.Data["transient"].(string); ok {
		return nil, failure.Transient(errors.New(msg))
	}
	b, err := json.Marshal(req.Event)
	if err != nil {
		return nil, err
	}
	v, _ := req.Event.Data["verdict"].(string)
	return &hook.NotifyResponse{Verdict: hook.Verdict(v), Reason: string(b)}, nil
}

// Run checks that h answers as Mirror does.
func Run(t *testing.T, h hook.Hook) {
	ctx := context.Background()
	at := time.Date(2026, 5, 4, 3, 2, 1, 123456789, time.UTC)
	for _, tc := range []struct {
		name string
		ev   hook.Event
	}{
		{"enter, proceed", hook.Event{Kind: hook.Enter, State: "RegisterThing", Time: at, Attempt: 2,
			Data: map[string]any{"thingName": "dev-1", "templateName": "tmpl", "nested": map[string]any{"n": 1.5}}}},
		{"leave, veto", hook.Event{Kind: hook.Leave, State: "Persist", Time: at, Attempt: 1,
			Data: map[string]any{"verdict": "veto"}}},
		{"enter, retry later", hook.Event{Kind: hook.Enter, State: "Restart", Time: at,
			Data: map[string]any{"verdict": "retry-later"}}},
		{"failed, no data", hook.Event{Kind: hook.Failed, State: "CreateCertificate", Time: at, Attempt: 3, Error: "rejected: 403"}},
		{"done", hook.Event{Kind: hook.Done, Time: at}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := h.Notify(ctx, &hook.NotifyRequest{Event: tc.ev})
			if err != nil {
				t.Fatal(err)
			}
			var got hook.Event
			if err := json.Unmarshal([]byte(res.Reason), &got); err != nil {
				t.Fatalf("reason %q is not the event as JSON: %v", res.Reason, err)
			}
			want := tc.ev
			// JSON numbers come back as float64, as a hook sees them.
			if want.Data != nil {
				b, _ := json.Marshal(want.Data)
				want.Data = nil
				_ = json.Unmarshal(b, &want.Data)
			}
			if !got.Time.Equal(want.Time) {
				t.Errorf("time %v reached the hook as %v", want.Time, got.Time)
			}
			got.Time, want.Time = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("event reached the hook as %+v, want %+v", got, want)
			}
			v, _ := tc.ev.Data["verdict"].(string)
			if res.Verdict != hook.Verdict(v) {
				t.Errorf("verdict %q, want %q", res.Verdict, v)
			}
		})
	}
	t.Run("an error keeps its message and is fatal", func(t *testing.T) {
		_, err := h.Notify(ctx, &hook.NotifyRequest{Event: hook.Event{Kind: hook.Enter, State: "X", Data: map[string]any{"error": "mirror: refused"}}})
		if err == nil || !strings.Contains(err.Error(), "mirror: refused") || failure.IsTransient(err) {
			t.Fatalf("error = %v, want a fatal one saying refused", err)
		}
	})
	t.Run("a transient error stays transient", func(t *testing.T) {
		_, err := h.Notify(ctx, &hook.NotifyRequest{Event: hook.Event{Kind: hook.Enter, State: "X", Data: map[string]any{"transient": "mirror: later"}}})
		if err == nil || !strings.Contains(err.Error(), "mirror: later") || !failure.IsTransient(err) {
			t.Fatalf("error = %v, want a transient one saying later", err)
		}
	})
}
