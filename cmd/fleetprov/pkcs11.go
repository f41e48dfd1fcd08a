//go:build pkcs11

package main

import "github.com/fleetprov/fleetprov/plugins/keystore/pkcs11"

// Built with -tags pkcs11 (and cgo), fleetprov can keep keys in a PKCS#11
// token. The default build leaves the store out and needs no cgo.
func init() { pkcs11.Register() }
