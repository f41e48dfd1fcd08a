//go:build !cgo

package pkcs11

import (
	"testing"

	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// Built without cgo (CGO_ENABLED=0 go test), a pkcs11: URI says what is
// missing.
func TestWithoutCgo(t *testing.T) {
	Register()
	_, err := keystore.Open("pkcs11:token=t;object=o?module-path=/m.so&pin-source=file:/p")
	want := "this program was built without cgo, which the PKCS#11 key store needs to load a token's library: build it with CGO_ENABLED=1"
	if err == nil || err.Error() != want {
		t.Fatalf("Open:\n got %v\nwant %s", err, want)
	}
}
