// Package paramsource derives provisioning template parameters from the
// device itself: a serial number in an EEPROM, a MAC address, the DMI
// serial. A ParamSource is given the template being provisioned and the
// parameters known so far, and answers with parameters to add or replace.
// Sources run once per provisioning identity, before anything is asked of
// the cloud; what they answer is journaled, so a resumed run sends exactly
// the values of its first try.
//
// Every ParamSource has an in-process implementation and a gRPC one (a
// go-plugin plugin) that pass the same conformance suite.
package paramsource

import "context"

// ParamsRequest is what a source is given.
type ParamsRequest struct {
	// TemplateName is the provisioning template the parameters are for.
	TemplateName string
	// Params are the parameters known so far: the literal templateParams
	// of the config, then what earlier sources answered. A source must not
	// change the map.
	Params map[string]string
}

// ParamsResponse holds the parameters a source adds or replaces.
type ParamsResponse struct {
	Params map[string]string
}

// ParamSource derives template parameters.
type ParamSource interface {
	Params(ctx context.Context, req *ParamsRequest) (*ParamsResponse, error)
}
