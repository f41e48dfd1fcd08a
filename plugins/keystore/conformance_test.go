package keystore_test

import (
	"path/filepath"
	"testing"

	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/keystore/keystoretest"
)

// The in-process stores pass the suite that plugins/host runs against a
// plugin binary.
func TestConformanceMemory(t *testing.T) {
	keystoretest.Run(t, keystoretest.Options{
		Open: func(t *testing.T) keystore.KeyStore { return keystore.NewMemory() },
		URI:  func(t *testing.T, name string) string { return "memory:" + name },
	})
}

func TestConformanceFile(t *testing.T) {
	dir := t.TempDir()
	keystoretest.Run(t, keystoretest.Options{
		Open: func(t *testing.T) keystore.KeyStore {
			ks, err := keystore.Open(keystore.FileURI(dir))
			if err != nil {
				t.Fatal(err)
			}
			return ks
		},
		URI: func(t *testing.T, name string) string { return keystore.FileURI(filepath.Join(dir, name)) },
	})
}
