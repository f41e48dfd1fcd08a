package engine

import (
	"context"
	"fmt"

	"github.com/looplab/fsm"
)

// Machine is a validated list of steps and everything derived from it.
type Machine struct {
	steps []Step
	index map[string]int
}

// Transitions that every machine has besides its steps' own.
const (
	// TransitionFail ends a run in Failed; the record keeps the step that
	// failed so the next run resumes there.
	TransitionFail = "fail"
	// TransitionAlreadyProvisioned goes from an EveryRun first step
	// straight to Done when the journal or the config says the device is
	// provisioned.
	TransitionAlreadyProvisioned = "already_provisioned"
	// transitionResumeAt prefixes the edge from an EveryRun first step to
	// the step a resumed run starts at.
	transitionResumeAt = "resume_at_"
)

// NewMachine checks a list of steps: names unique and not Done or Failed,
// detours to steps of the list, EveryRun only on the first step, and at
// least one journaled step.
func NewMachine(steps []Step) (*Machine, error) {
	m := &Machine{steps: steps, index: map[string]int{}}
	for i, s := range steps {
		switch {
		case s.Name == "":
			return nil, fmt.Errorf("engine: step %d has no name", i+1)
		case s.Name == Done || s.Name == Failed:
			return nil, fmt.Errorf("engine: step %q: %s is the machine's own", s.Name, s.Name)
		case s.EveryRun && i > 0:
			return nil, fmt.Errorf("engine: step %q: only the first step may run on every start", s.Name)
		}
		if _, dup := m.index[s.Name]; dup {
			return nil, fmt.Errorf("engine: step %q declared twice", s.Name)
		}
		if _, retired := Retired[s.Name]; retired {
			return nil, fmt.Errorf("engine: step %q: the name is retired (journals in the field may hold it with another meaning)", s.Name)
		}
		m.index[s.Name] = i
	}
	if m.firstJournaled() == "" {
		return nil, fmt.Errorf("engine: no journaled step")
	}
	for _, s := range steps {
		for _, d := range s.Detours {
			j, ok := m.index[d.To]
			if !ok || steps[j].EveryRun {
				return nil, fmt.Errorf("engine: step %q: detour %q goes to %q, not a journaled step of the machine", s.Name, d.Transition, d.To)
			}
			if d.Transition == "" || d.On == nil {
				return nil, fmt.Errorf("engine: step %q: a detour needs a transition name and an error", s.Name)
			}
		}
	}
	return m, nil
}

// Steps returns the machine's steps in order.
func (m *Machine) Steps() []Step { return m.steps }

func (m *Machine) step(name string) (Step, bool) {
	i, ok := m.index[name]
	if !ok {
		return Step{}, false
	}
	return m.steps[i], true
}

// next is the state a step's success leads to.
func (m *Machine) next(name string) string {
	i := m.index[name]
	if i+1 < len(m.steps) {
		return m.steps[i+1].Name
	}
	return Done
}

// firstJournaled is where a fresh run starts: the first step that is not
// EveryRun.
func (m *Machine) firstJournaled() string {
	for _, s := range m.steps {
		if !s.EveryRun {
			return s.Name
		}
	}
	return ""
}

// everyRun is the EveryRun first step, if any.
func (m *Machine) everyRun() (Step, bool) {
	if len(m.steps) > 0 && m.steps[0].EveryRun {
		return m.steps[0], true
	}
	return Step{}, false
}

// Transitions is the machine as looplab/fsm's table: the engine drives it
// and Mermaid draws it.
func (m *Machine) Transitions() fsm.Events {
	var evs fsm.Events
	var fail []string
	for _, s := range m.steps {
		evs = append(evs, fsm.EventDesc{Name: s.transition(), Src: []string{s.Name}, Dst: m.next(s.Name)})
		for _, d := range s.Detours {
			evs = append(evs, fsm.EventDesc{Name: d.Transition, Src: []string{s.Name}, Dst: d.To})
		}
		fail = append(fail, s.Name)
	}
	if first, ok := m.everyRun(); ok {
		// Where a resumed run starts, through the machine like any step.
		for _, s := range m.steps[1:] {
			if s.Name != m.next(first.Name) {
				evs = append(evs, fsm.EventDesc{Name: transitionResumeAt + s.Name, Src: []string{first.Name}, Dst: s.Name})
			}
		}
		evs = append(evs, fsm.EventDesc{Name: TransitionAlreadyProvisioned, Src: []string{first.Name}, Dst: Done})
	}
	return append(evs, fsm.EventDesc{Name: TransitionFail, Src: fail, Dst: Failed})
}

// newFSM returns the machine positioned at state.
func (m *Machine) newFSM(state string) (*fsm.FSM, error) {
	// SetState accepts any string; check here so a corrupt journal cannot
	// position the machine outside the table.
	if _, ok := m.index[state]; !ok {
		return nil, fmt.Errorf("unknown state %q", state)
	}
	return fsm.NewFSM(state, m.Transitions(), nil), nil
}

// fire moves f along transition and returns the new state.
func fire(f *fsm.FSM, transition string) (string, error) {
	if err := f.Event(context.Background(), transition); err != nil {
		return "", fmt.Errorf("transition %s from %s: %w", transition, f.Current(), err)
	}
	return f.Current(), nil
}

// Mermaid draws the machine as a Mermaid state diagram, with looplab/fsm's
// own renderer so the drawing cannot drift from the table.
func (m *Machine) Mermaid() (string, error) {
	f, err := m.newFSM(m.steps[0].Name)
	if err != nil {
		return "", err
	}
	return fsm.VisualizeWithType(f, fsm.MERMAID)
}
