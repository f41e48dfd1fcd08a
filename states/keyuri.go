package states

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// CheckKeyURI checks, before anything is touched, that the device key's
// URI, and the claim key's when it lives in a key store, name a key store
// this program has and are well formed for it. A problem is a usage error
// naming keyPath or claimKeyPath.
//
// A device key URI that leaves the key's place to its store (tpm: without
// a handle) is then replaced in cfg by where the key is or will be, so
// that the journal, the resumed run and system.privateKeyPath all name
// the same key. That asks the store (the TPM): its errors are not usage
// errors.
func CheckKeyURI(cfg *config.Config) error {
	if err := checkKeyURI(cfg.KeyURI); err != nil {
		return cfg.KeyError("keyPath", err)
	}
	if config.IsKeyURI(cfg.ClaimKeyPath) {
		if err := checkKeyURI(cfg.ClaimKeyPath); err != nil {
			return cfg.KeyError("claimKeyPath", err)
		}
	}
	return resolveKeyURI(cfg)
}

func resolveKeyURI(cfg *config.Config) error {
	scheme, _, _ := strings.Cut(cfg.KeyURI, ":")
	if scheme == "file" || scheme == "plugin" {
		return nil
	}
	ks, err := keystore.Open(cfg.KeyURI)
	if err != nil {
		return err
	}
	defer ks.Close()
	r, ok := ks.(keystore.URIResolver)
	if !ok {
		return nil
	}
	uri, err := r.ResolveURI(context.Background(), cfg.KeyURI)
	if err != nil {
		return fmt.Errorf("device key %s: %w", cfg.KeyURI, err)
	}
	cfg.KeyURI = uri
	return nil
}

func checkKeyURI(uri string) error {
	scheme, _, _ := strings.Cut(uri, ":")
	if scheme == "file" {
		return nil
	}
	if !slices.Contains(keystore.Schemes(), scheme) {
		hint := "use a build that includes it, or a key file path"
		switch scheme {
		case "pkcs11":
			hint = "serve it with the fleetprov-keystore-pkcs11 plugin (write plugin:NAME/pkcs11:...), build fleetprov with -tags pkcs11, or use a key file path"
		case "handle", "tpm":
			return fmt.Errorf("names a TPM key (%s:), but this fleetprov has no TPM key store (it has: %s): build fleetprov with -tags tpm, or use a key file path", scheme, strings.Join(keystore.Schemes(), ", "))
		}
		return fmt.Errorf("names a %s: key, but this fleetprov has no %s key store (it has: %s): %s", scheme, scheme, strings.Join(keystore.Schemes(), ", "), hint)
	}
	if scheme == "plugin" {
		// Checked by the plugin when the key is first used: asking it
		// now would start it before the run needs it.
		return nil
	}
	ks, err := keystore.Open(uri)
	if err != nil {
		return err
	}
	defer ks.Close()
	if c, ok := ks.(keystore.URIChecker); ok {
		return c.CheckURI(uri)
	}
	return nil
}
