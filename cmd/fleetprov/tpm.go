//go:build tpm

package main

import "github.com/fleetprov/fleetprov/plugins/keystore/tpm"

// Built with -tags tpm, fleetprov can keep keys in a TPM 2.0 (handle: and
// tpm: key URIs). The default build leaves the store out.
func init() { tpm.Register() }
