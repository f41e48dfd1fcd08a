package states

import (
	"fmt"
	"slices"
	"strings"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// CheckKeyURI checks, before anything is touched, that the device key's
// URI names a key store this program has and is well formed for it. A
// problem is a usage error naming keyPath.
func CheckKeyURI(cfg *config.Config) error {
	scheme, _, _ := strings.Cut(cfg.KeyURI, ":")
	if scheme == "file" {
		return nil
	}
	if !slices.Contains(keystore.Schemes(), scheme) {
		return cfg.KeyPathError(fmt.Errorf("names a %s: key, but this fleetprov has no %s key store (it has: %s): use a build that includes it, or a key file path", scheme, scheme, strings.Join(keystore.Schemes(), ", ")))
	}
	ks, err := keystore.Open(cfg.KeyURI)
	if err != nil {
		return cfg.KeyPathError(err)
	}
	defer ks.Close()
	if c, ok := ks.(keystore.URIChecker); ok {
		if err := c.CheckURI(cfg.KeyURI); err != nil {
			return cfg.KeyPathError(err)
		}
	}
	return nil
}
