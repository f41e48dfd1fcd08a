package engine

import (
	"errors"
	"fmt"
	"slices"
)

// A Step declares one state of the machine whole: its name, the work, the
// edges out of it, and where a run that stopped in it starts again. The
// machine is an ordered list of Steps: when a step's work succeeds, the run
// goes on to the next step in the list, and after the last one it is Done.
// The engine derives everything else from the list: the transition table,
// the diagram, which names a journal may hold, and the resume rules.
type Step struct {
	// Name is written into journals on devices in the field: keep it
	// stable.
	Name string
	// State does the work. It may be nil only in a list used for drawing
	// (Mermaid); the engine refuses to run one.
	State State
	// Transition names the edge taken when State succeeds. It is journaled
	// with the next step's record; "" means Name+"_done".
	Transition string
	// Detours are edges taken on particular errors instead of failing.
	Detours []Detour
	// Resume decides where a run that stopped in this step starts again.
	// nil means here again, with Run.Resumed set so the work finds what
	// it half did; ResumeHere gives a reason for that.
	Resume ResumeRule
	// EveryRun marks a step that runs at the start of every run, before
	// the journal is opened, and is never journaled: LoadConfig, since the
	// journal's path is in the config. Only the first step may have it.
	EveryRun bool
}

// A Detour sends the run to another step when the step's work fails with
// an error that is On (errors.Is), instead of failing the run.
type Detour struct {
	Transition string
	On         error
	To         string
	// Max caps how often one run takes this detour; past it the error
	// fails the run. 0 means once.
	Max int
	// Forget clears data the destination must not reuse, if set.
	Forget func(*Data)
}

// ResumeRule decides where a run resumes when the journal stopped in a
// step: the step to start at and why. It may clear what the start must not
// reuse from d.
type ResumeRule func(in ResumeInput, d *Data) (start, reason string)

// ResumeHere starts again in the step a run stopped in, saying why.
func ResumeHere(step, reason string) ResumeRule {
	return func(ResumeInput, *Data) (string, string) { return step, reason }
}

func (s Step) transition() string {
	if s.Transition != "" {
		return s.Transition
	}
	return s.Name + "_done"
}

// ErrNoStep is returned (wrapped) when an edit names a step the list does
// not have.
var ErrNoStep = errors.New("no such step")

func indexOf(steps []Step, name string) (int, error) {
	i := slices.IndexFunc(steps, func(s Step) bool { return s.Name == name })
	if i < 0 {
		return 0, fmt.Errorf("%w: %q", ErrNoStep, name)
	}
	return i, nil
}

// InsertAfter returns steps with add placed right after the step named
// after: a vendor's own step, say, between RegisterThing and Persist.
func InsertAfter(steps []Step, after string, add ...Step) ([]Step, error) {
	i, err := indexOf(steps, after)
	if err != nil {
		return nil, err
	}
	return slices.Insert(slices.Clone(steps), i+1, add...), nil
}

// InsertBefore returns steps with add placed right before the step named
// before.
func InsertBefore(steps []Step, before string, add ...Step) ([]Step, error) {
	i, err := indexOf(steps, before)
	if err != nil {
		return nil, err
	}
	return slices.Insert(slices.Clone(steps), i, add...), nil
}

// Replace returns steps with the step of s's name replaced by s.
func Replace(steps []Step, s Step) ([]Step, error) {
	i, err := indexOf(steps, s.Name)
	if err != nil {
		return nil, err
	}
	out := slices.Clone(steps)
	out[i] = s
	return out, nil
}

// Remove returns steps without the step named name. A journal that stopped
// in a removed step no longer resumes: keep the name in Retired if devices
// in the field may have stopped there.
func Remove(steps []Step, name string) ([]Step, error) {
	i, err := indexOf(steps, name)
	if err != nil {
		return nil, err
	}
	return slices.Delete(slices.Clone(steps), i, i+1), nil
}
