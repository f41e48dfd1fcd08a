package engine

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/fleetprov/fleetprov/failure"
)

// EventType says what happened.
type EventType string

const (
	EventResumed            EventType = "resumed"
	EventAlreadyProvisioned EventType = "already-provisioned"
	EventEntered            EventType = "entered"
	EventLeft               EventType = "left"
	EventRetrying           EventType = "retrying"
	EventFailed             EventType = "failed"
	// EventInterrupted: the run was stopped by a signal inside a state;
	// nothing was journaled for it.
	EventInterrupted EventType = "interrupted"
	EventDone        EventType = "done"
)

// Event is one thing the engine reports to subscribers.
type Event struct {
	Type  EventType
	State string
	Time  time.Time
	// Duration is how long the state ran (Left, Failed) or the whole run
	// took (Done). A Left with Err set is a detour: the state failed with
	// Err and the run goes on to the state in Reason.
	Duration time.Duration
	// Attempt is the try within this run (Retrying), or the entry count
	// across runs (Entered).
	Attempt int
	// Wait is the backoff before the next try (Retrying).
	Wait   time.Duration
	Err    error
	Reason string
	Data   *Data
}

// Subscriber receives events in order. It must not block for long: the run
// waits for it.
type Subscriber interface {
	HandleEvent(Event)
}

// SubscriberFunc adapts a function to Subscriber.
type SubscriberFunc func(Event)

func (f SubscriberFunc) HandleEvent(e Event) { f(e) }

// LogSubscriber writes events to a slog logger, one record per event;
// errors are written cause first (failure.Line).
type LogSubscriber struct {
	Logger *slog.Logger
	// Done is the message of the record of a finished run; "" is
	// "provisioned".
	Done string
}

func (l LogSubscriber) HandleEvent(e Event) {
	lg := l.Logger
	switch e.Type {
	case EventResumed:
		lg.Info("resuming", "state", e.State, "reason", e.Reason)
	case EventAlreadyProvisioned:
		lg.Info("already provisioned", "reason", e.Reason)
	case EventEntered:
		lg.Debug("state entered", "state", e.State, "entry", e.Attempt)
	case EventLeft:
		if e.Err != nil {
			lg.Warn("state left for another", "state", e.State, "to", e.Reason, "duration", e.Duration.Round(time.Millisecond), "err", failure.Line(e.Err))
			break
		}
		lg.Info("state done", "state", e.State, "duration", e.Duration.Round(time.Millisecond))
	case EventRetrying:
		lg.Warn("attempt failed, retrying", "state", e.State, "attempt", e.Attempt, "retryIn", e.Wait.Round(time.Millisecond), "err", failure.Line(e.Err))
	case EventInterrupted:
		lg.Warn("interrupted; the journal keeps where it stopped", "state", e.State)
	case EventFailed:
		if failure.IsUsage(e.Err) {
			// The CLI prints a usage error as its one line; logging it too
			// would say it twice.
			return
		}
		lg.Error("state failed", "state", e.State, "duration", e.Duration.Round(time.Millisecond), "err", failure.Line(e.Err))
	case EventDone:
		attrs := []any{"duration", e.Duration.Round(time.Millisecond)}
		if e.Data != nil {
			attrs = append(attrs, "thing", e.Data.ThingName, "certificateId", e.Data.CertificateID)
		}
		msg := l.Done
		if msg == "" {
			msg = "provisioned"
		}
		lg.Info(msg, attrs...)
	}
}

// Progress prints one line per step with its duration, for a person
// watching a terminal.
type Progress struct {
	mu sync.Mutex
	W  io.Writer
}

func (p *Progress) HandleEvent(e Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Type {
	case EventResumed:
		fmt.Fprintf(p.W, "resuming at %s: %s\n", e.State, e.Reason)
	case EventAlreadyProvisioned:
		fmt.Fprintf(p.W, "already provisioned: %s\n", e.Reason)
	case EventLeft:
		if e.Err != nil {
			// A detour: the step did not do its work, the run goes back.
			fmt.Fprintf(p.W, "  back  %-18s %s, to %s: %s\n", e.State, fmtDuration(e.Duration), e.Reason, failure.Line(e.Err))
			break
		}
		fmt.Fprintf(p.W, "  ok    %-18s %s\n", e.State, fmtDuration(e.Duration))
	case EventRetrying:
		// The attempt that failed, numbered as the log numbers it.
		fmt.Fprintf(p.W, "  retry %-18s attempt %d failed, next in %s: %s\n", e.State, e.Attempt, fmtDuration(e.Wait), failure.Line(e.Err))
	case EventInterrupted:
		fmt.Fprintf(p.W, "  stop  %-18s interrupted: run again to resume\n", e.State)
	case EventFailed:
		if failure.IsUsage(e.Err) {
			return
		}
		// The error itself is printed once, on stderr, by the CLI.
		fmt.Fprintf(p.W, "  FAIL  %-18s %s\n", e.State, fmtDuration(e.Duration))
	case EventDone:
		fmt.Fprintf(p.W, "provisioned in %s", fmtDuration(e.Duration))
		if e.Data != nil && e.Data.ThingName != "" {
			fmt.Fprintf(p.W, ": thing %s, certificate %s", e.Data.ThingName, e.Data.CertificateID)
		}
		fmt.Fprintln(p.W)
	}
}

func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}
