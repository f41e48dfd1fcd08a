package engine

import (
	"context"
	"fmt"

	"github.com/looplab/fsm"
)

// State names. They are written into journals on devices in the field, so
// they are stable: renaming one breaks resume on every device that stopped
// in it. Retired names must stay listed in knownStates.
const (
	LoadConfig        = "LoadConfig"
	DeriveParams      = "DeriveParams"
	PrepareKey        = "PrepareKey"
	CreateCertificate = "CreateCertificate"
	RegisterThing     = "RegisterThing"
	Persist           = "Persist"
	Restart           = "Restart"
	Done              = "Done"
	Failed            = "Failed"
)

// Event names: what happened in the state being left.
const (
	EvConfigLoaded      = "config_loaded"
	EvParamsDerived     = "params_derived"
	EvKeyReady          = "key_ready"
	EvCertificateIssued = "certificate_issued"
	EvThingRegistered   = "thing_registered"
	EvPersisted         = "persisted"
	EvRestarted         = "restarted"
	EvTokenUnusable     = "token_unusable"
	EvFail              = "fail"
)

// Order is the path a provisioning run takes when nothing goes wrong.
var Order = []string{LoadConfig, DeriveParams, PrepareKey, CreateCertificate, RegisterThing, Persist, Restart, Done}

var knownStates = map[string]bool{
	LoadConfig: true, DeriveParams: true, PrepareKey: true, CreateCertificate: true, RegisterThing: true,
	Persist: true, Restart: true, Done: true, Failed: true,
}

// Transitions is the machine, as data: the engine drives it, `fleetprov
// graph` draws it, and no state knows which state follows it.
var Transitions = fsm.Events{
	{Name: EvConfigLoaded, Src: []string{LoadConfig}, Dst: DeriveParams},
	{Name: EvParamsDerived, Src: []string{DeriveParams}, Dst: PrepareKey},
	{Name: EvKeyReady, Src: []string{PrepareKey}, Dst: CreateCertificate},
	{Name: EvCertificateIssued, Src: []string{CreateCertificate}, Dst: RegisterThing},
	{Name: EvThingRegistered, Src: []string{RegisterThing}, Dst: Persist},
	{Name: EvPersisted, Src: []string{Persist}, Dst: Restart},
	{Name: EvRestarted, Src: []string{Restart}, Dst: Done},
	// The ownership token expired or the cloud no longer honours it: the
	// certificate it belongs to can never be activated, so get a new one.
	{Name: EvTokenUnusable, Src: []string{RegisterThing}, Dst: CreateCertificate},
	{Name: EvFail, Src: []string{LoadConfig, DeriveParams, PrepareKey, CreateCertificate, RegisterThing, Persist, Restart}, Dst: Failed},
}

// successEvent is the event fired when a state's Run returns nil.
var successEvent = map[string]string{
	LoadConfig:        EvConfigLoaded,
	DeriveParams:      EvParamsDerived,
	PrepareKey:        EvKeyReady,
	CreateCertificate: EvCertificateIssued,
	RegisterThing:     EvThingRegistered,
	Persist:           EvPersisted,
	Restart:           EvRestarted,
}

// newMachine returns the table's machine positioned at state.
func newMachine(state string) (*fsm.FSM, error) {
	// SetState accepts any string; check it here so a corrupt journal cannot
	// position the machine outside the table.
	if !knownStates[state] {
		return nil, fmt.Errorf("unknown state %q", state)
	}
	return fsm.NewFSM(state, Transitions, nil), nil
}

// fire moves m along event and returns the new state.
func fire(m *fsm.FSM, event string) (string, error) {
	if err := m.Event(context.Background(), event); err != nil {
		return "", fmt.Errorf("transition %s from %s: %w", event, m.Current(), err)
	}
	return m.Current(), nil
}

// Mermaid draws the transition table as a Mermaid state diagram, with
// looplab/fsm's own renderer so the drawing cannot drift from the table.
func Mermaid() (string, error) {
	m, err := newMachine(LoadConfig)
	if err != nil {
		return "", err
	}
	return fsm.VisualizeWithType(m, fsm.MERMAID)
}
