//go:build cgo

// Command fleetprov-keystore-pkcs11 is the PKCS#11 key store as a fleetprov
// plugin: fleetprov itself stays free of cgo, and this binary loads the
// token's library. Name it in the plugins section and its keys as
// plugin:NAME/pkcs11:token=...; see docs/pkcs11.md.
package main

import (
	"github.com/fleetprov/fleetprov/plugins/keystore/pkcs11"
	"github.com/fleetprov/fleetprov/plugins/sdk"
)

func main() { sdk.Serve(sdk.Plugins{KeyStore: pkcs11.New()}) }
