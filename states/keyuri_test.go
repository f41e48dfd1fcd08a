package states

import (
	"testing"

	"github.com/fleetprov/fleetprov/failure"
)

// A key URI of a store this program lacks is a config error naming
// keyPath, found before anything is touched.
func TestCheckKeyURIUnknownStore(t *testing.T) {
	const uri = "pkcs11:token=t;object=o?module-path=/m.so&pin-source=file:/p"
	d := newDevice(t, replaceLine(t, `# keyPath: "/custom/path/priv_key" #[Optional]`, `keyPath: "`+uri+`"`))
	err := CheckKeyURI(d.cfg)
	want := "config " + d.configPath + ": services.aws.greengrass.fleet_provisioning.configuration.keyPath names a pkcs11: key, but this fleetprov has no pkcs11 key store (it has: file): serve it with the fleetprov-keystore-pkcs11 plugin (write plugin:NAME/pkcs11:...), build fleetprov with -tags pkcs11, or use a key file path"
	if err == nil || err.Error() != want {
		t.Fatalf("CheckKeyURI:\n got %v\nwant %s", err, want)
	}
	if !failure.IsUsage(err) {
		t.Errorf("%v is not a usage error", err)
	}
	if d.cfg.KeyPath != "" || d.cfg.KeyURI != uri {
		t.Errorf("KeyPath %q KeyURI %q: want no path and the URI", d.cfg.KeyPath, d.cfg.KeyURI)
	}
}
