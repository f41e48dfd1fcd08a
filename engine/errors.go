package engine

import "github.com/fleetprov/fleetprov/failure"

// StateError is a run that failed in State. Its message names the state,
// then the cause first (failure.Line): "CreateCertificate: connection
// refused; connect to h:8883".
type StateError struct {
	State string
	Err   error
}

func (e *StateError) Error() string { return e.State + ": " + failure.Line(e.Err) }
func (e *StateError) Unwrap() error { return e.Err }

// Where names the state, for failure.Line.
func (e *StateError) Where() string { return e.State }
