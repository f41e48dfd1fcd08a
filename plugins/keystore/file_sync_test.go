package keystore

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/fleetprov/fleetprov/atomicfile/atomicfiletest"
)

// A key written into directories that do not exist yet: each new
// directory is made durable in its parent, and is private (0700) whatever
// the umask, since it holds a private key.
func TestFileStoreSyncsNewKeyDirectories(t *testing.T) {
	root := t.TempDir()
	keys := filepath.Join(root, "keys")
	dev := filepath.Join(keys, "device")
	uri := FileURI(filepath.Join(dev, "priv_key"))
	ks, err := Open(uri)
	if err != nil {
		t.Fatal(err)
	}
	syncs := atomicfiletest.Record(t)
	if _, err := ks.CreateKey(context.Background(), &CreateKeyRequest{URI: uri, Algorithm: ECDSAP256}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{root, keys, dev} {
		if n := syncs.Count(d); n != 1 {
			t.Errorf("%s fsynced %d times, want once", d, n)
		}
	}
	for _, d := range []string{keys, dev} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s mode = %v, want 0700", d, fi.Mode().Perm())
		}
	}
}
