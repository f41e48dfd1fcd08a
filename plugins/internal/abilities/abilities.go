// Package abilities builds the key store a plugin host hands out: the
// plugin's core KeyStore plus exactly the optional abilities the plugin
// has. fleetprov finds an optional ability by type assertion, so a key
// store that offered one the plugin lacks would fail at the call instead
// of being seen as absent. Both hosts' clients (plugins/internal/wire in
// process, plugins/remote through the plugin host) build theirs here.
package abilities

import "github.com/fleetprov/fleetprov/plugins/keystore"

// KeyStore returns core offering imp, del and crt: a nil one is not
// offered. Abilities core itself has are hidden, so what the result
// offers is exactly what is passed.
func KeyStore(core keystore.KeyStore, imp keystore.KeyImporter, del keystore.KeyDeleter, crt keystore.CertificateStorer) keystore.KeyStore {
	// Go cannot add methods to a value at run time: each combination is
	// its own struct type, whose method set is that of its embedded
	// interfaces.
	switch {
	case imp != nil && del != nil && crt != nil:
		return struct {
			keystore.KeyStore
			keystore.KeyImporter
			keystore.KeyDeleter
			keystore.CertificateStorer
		}{core, imp, del, crt}
	case imp != nil && del != nil:
		return struct {
			keystore.KeyStore
			keystore.KeyImporter
			keystore.KeyDeleter
		}{core, imp, del}
	case imp != nil && crt != nil:
		return struct {
			keystore.KeyStore
			keystore.KeyImporter
			keystore.CertificateStorer
		}{core, imp, crt}
	case del != nil && crt != nil:
		return struct {
			keystore.KeyStore
			keystore.KeyDeleter
			keystore.CertificateStorer
		}{core, del, crt}
	case imp != nil:
		return struct {
			keystore.KeyStore
			keystore.KeyImporter
		}{core, imp}
	case del != nil:
		return struct {
			keystore.KeyStore
			keystore.KeyDeleter
		}{core, del}
	case crt != nil:
		return struct {
			keystore.KeyStore
			keystore.CertificateStorer
		}{core, crt}
	}
	return struct{ keystore.KeyStore }{core}
}
