//go:build !cgo

package pkcs11

import (
	"errors"
	"net/url"
	"sync"

	"github.com/fleetprov/fleetprov/plugins/keystore"
)

var registerOnce sync.Once

// Register makes pkcs11: key URIs known, but without cgo the token's
// PKCS#11 library cannot be loaded: opening one says so.
func Register() {
	registerOnce.Do(func() {
		keystore.Register(Scheme, func(*url.URL) (keystore.KeyStore, error) {
			return nil, errors.New("this program was built without cgo, which the PKCS#11 key store needs to load a token's library: build it with CGO_ENABLED=1")
		})
	})
}
