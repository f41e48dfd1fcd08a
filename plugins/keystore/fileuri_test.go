package keystore

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// A path holding characters a URI gives a meaning names the same file
// through its URI: a key at /x/a#b must not be written to /x/a.
func TestFileURIRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"plain", "hash#probe", "query?x=1", "percent%41", "space here"} {
		path := filepath.Join(dir, name, "priv_key")
		uri := FileURI(path)
		got, err := filePath(uri)
		if err != nil || got != path {
			t.Errorf("filePath(FileURI(%q)) = %q, %v", path, got, err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		ks, err := Open(uri)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ks.CreateKey(context.Background(), &CreateKeyRequest{URI: uri, Algorithm: ECDSAP256}); err != nil {
			t.Fatalf("%s: CreateKey: %v", name, err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s: key not at %s: %v", name, path, err)
		}
	}
	if got := FileURI("/var/lib/greengrass/priv_key"); got != "file:/var/lib/greengrass/priv_key" {
		t.Errorf("an ordinary path's URI is %q", got)
	}
	if got, err := filePath("file:rel%23dir/key"); err != nil || got != "rel#dir/key" {
		t.Errorf("relative: %q, %v", got, err)
	}
}
