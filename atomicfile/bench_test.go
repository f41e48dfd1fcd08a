package atomicfile

import (
	"path/filepath"
	"testing"
)

// BenchmarkWriteFile is one crash-safe write of a certificate-sized file:
// temp file, fsync, rename, directory fsync.
func BenchmarkWriteFile(b *testing.B) {
	path := filepath.Join(b.TempDir(), "certificate.pem")
	data := make([]byte, 1300)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := WriteFile(path, data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}
