// Package abilities builds the key store a plugin host hands out: the
// plugin's core KeyStore plus exactly the optional abilities the plugin
// has. fleetprov finds an optional ability by type assertion, so a key
// store that offered one the plugin lacks would fail at the call instead
// of being seen as absent. Both hosts' clients (plugins/internal/wire in
// process, plugins/remote through the plugin host) build theirs here.
package abilities

import "github.com/fleetprov/fleetprov/plugins/keystore"

// Client is a plugin's key store client: it can make every call, and
// which optional ones the plugin serves is known only once it answers.
type Client interface {
	keystore.KeyStore
	keystore.KeyImporter
	keystore.KeyDeleter
	keystore.CertificateStorer
}

// KeyStore returns c offering the optional abilities the plugin said it
// has, and no other: c's own methods for the rest stay hidden.
func KeyStore(c Client, importKey, deleteKey, storeCertificate bool) keystore.KeyStore {
	// Go cannot add methods to a value at run time: each combination is
	// its own struct type, whose method set is that of its embedded
	// interfaces.
	switch {
	case importKey && deleteKey && storeCertificate:
		return struct {
			keystore.KeyStore
			keystore.KeyImporter
			keystore.KeyDeleter
			keystore.CertificateStorer
		}{c, c, c, c}
	case importKey && deleteKey:
		return struct {
			keystore.KeyStore
			keystore.KeyImporter
			keystore.KeyDeleter
		}{c, c, c}
	case importKey && storeCertificate:
		return struct {
			keystore.KeyStore
			keystore.KeyImporter
			keystore.CertificateStorer
		}{c, c, c}
	case deleteKey && storeCertificate:
		return struct {
			keystore.KeyStore
			keystore.KeyDeleter
			keystore.CertificateStorer
		}{c, c, c}
	case importKey:
		return struct {
			keystore.KeyStore
			keystore.KeyImporter
		}{c, c}
	case deleteKey:
		return struct {
			keystore.KeyStore
			keystore.KeyDeleter
		}{c, c}
	case storeCertificate:
		return struct {
			keystore.KeyStore
			keystore.CertificateStorer
		}{c, c}
	}
	return struct{ keystore.KeyStore }{c}
}
