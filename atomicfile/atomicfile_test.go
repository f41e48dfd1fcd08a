package atomicfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// withUmask runs the test under umask m. The umask is process-wide, so
// tests that use it must not run in parallel.
func withUmask(t *testing.T, m int) {
	t.Helper()
	old := syscall.Umask(m)
	t.Cleanup(func() { syscall.Umask(old) })
}

// leftovers lists the temporary files WriteFile may leave next to path.
func leftovers(t *testing.T, path string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*"))
	if err != nil {
		t.Fatal(err)
	}
	return matches
}

func wantFile(t *testing.T, path string, content []byte, perm fs.FileMode) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) {
		t.Errorf("%s content = %q, want %q", path, got, content)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != perm {
		t.Errorf("%s mode = %v, want %v", path, fi.Mode(), perm)
	}
}

func TestWriteFileContentAndMode(t *testing.T) {
	tests := []struct {
		name  string
		umask int
		perm  fs.FileMode
	}{
		{"secret with permissive umask", 0o000, 0o600},
		{"secret with usual umask", 0o022, 0o600},
		{"public with permissive umask", 0o000, 0o644},
		// The mode asked for is the mode given: a strict umask does not
		// make a root CA copy unreadable to Greengrass.
		{"public with strict umask", 0o077, 0o644},
		{"group readable", 0o000, 0o640},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			withUmask(t, tc.umask)
			path := filepath.Join(t.TempDir(), "certificate.pem")
			data := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
			if err := WriteFile(path, data, tc.perm); err != nil {
				t.Fatal(err)
			}
			wantFile(t, path, data, tc.perm)
			if l := leftovers(t, path); len(l) > 0 {
				t.Errorf("temporary files left behind: %v", l)
			}
		})
	}
}

func TestWriteFileEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wantFile(t, path, []byte{}, 0o600)
}

// TestWriteFileTempNeverWider watches the directory while a large file is
// written: a temporary file holding any data must already have the final
// mode, and it must never be more permissive than the mode asked for, so a
// private key is never readable by others, not even for a moment.
func TestWriteFileTempNeverWider(t *testing.T) {
	withUmask(t, 0)
	dir := t.TempDir()
	path := filepath.Join(dir, "priv_key")
	data := bytes.Repeat([]byte("k"), 32<<20)

	var seenWithData atomic.Int64
	for attempt := 0; attempt < 5 && seenWithData.Load() == 0; attempt++ {
		var (
			stop     atomic.Bool
			wg       sync.WaitGroup
			mu       sync.Mutex
			problems = map[string]bool{}
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				for _, tmp := range leftovers(t, path) {
					fi, err := os.Lstat(tmp)
					if err != nil {
						continue // renamed or removed meanwhile
					}
					perm := fi.Mode().Perm()
					mu.Lock()
					if perm&^0o600 != 0 {
						problems["temporary file mode "+perm.String()+" is wider than 0600"] = true
					}
					if fi.Size() > 0 {
						seenWithData.Add(1)
						if perm != 0o600 {
							problems["temporary file holds data with mode "+perm.String()] = true
						}
					}
					mu.Unlock()
				}
			}
		}()
		err := WriteFile(path, data, 0o600)
		stop.Store(true)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		for p := range problems {
			t.Error(p)
		}
	}
	if seenWithData.Load() == 0 {
		t.Log("the temporary file was never caught holding data; only the final state was checked")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 || fi.Size() != int64(len(data)) {
		t.Errorf("result: mode %v size %d, want 0600 and %d bytes", fi.Mode(), fi.Size(), len(data))
	}
	if l := leftovers(t, path); len(l) > 0 {
		t.Errorf("temporary files left behind: %v", l)
	}
}

func TestWriteFileReplacesAtomically(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	old := []byte("system:\n  thingName: \"\"\n")
	if err := os.WriteFile(path, old, 0o644); err != nil {
		t.Fatal(err)
	}
	// A reader that opened the file before the write, as Greengrass might
	// have, keeps reading the whole old content: the file is replaced, not
	// rewritten in place.
	reader, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()

	newer := []byte("system:\n  thingName: \"gg_a2_b9_d2_5a_fd_f9\"\n")
	if err := WriteFile(path, newer, 0o600); err != nil {
		t.Fatal(err)
	}
	wantFile(t, path, newer, 0o600)
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(reader); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), old) {
		t.Errorf("an open reader saw %q, want the old content %q", buf.Bytes(), old)
	}
	if l := leftovers(t, path); len(l) > 0 {
		t.Errorf("temporary files left behind: %v", l)
	}
}

// TestWriteFileFailureKeepsOld makes the data write itself fail halfway
// (the file size limit stands in for a full disk): the old file must be
// untouched and no temporary file left behind.
func TestWriteFileFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "certificate.pem")
	old := []byte("old certificate\n")
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}

	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	small := lim
	small.Cur = 4096
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &small); err != nil {
		t.Skipf("cannot lower the file size limit: %v", err)
	}
	err := WriteFile(path, bytes.Repeat([]byte("n"), 64<<10), 0o600)
	if rerr := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); rerr != nil {
		t.Fatalf("restore file size limit: %v", rerr)
	}

	if !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("err = %v, want a file-too-large error", err)
	}
	if want := "write " + path + ": "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %q, want it to start with %q", err, want)
	}
	wantFile(t, path, old, 0o600)
	if l := leftovers(t, path); len(l) > 0 {
		t.Errorf("temporary files left behind: %v", l)
	}
}

func TestWriteFileUnwritableDirectory(t *testing.T) {
	dir := t.TempDir()
	// A path under a regular file cannot be created, even by root.
	blocker := filepath.Join(dir, "credentials")
	if err := os.WriteFile(blocker, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(blocker, "certificate.pem")
	err := WriteFile(path, []byte("new"), 0o600)
	if !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("err = %v, want ENOTDIR", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("err = %q does not name %s", err, path)
	}
	err = WriteFile(path, []byte("new"), 0o600, Options{MkdirMode: 0o755})
	if !errors.Is(err, syscall.ENOTDIR) || !strings.HasPrefix(err.Error(), "create directory "+blocker+": ") {
		t.Errorf("with MkdirMode: err = %v, want \"create directory %s: ...\" (ENOTDIR)", err, blocker)
	}
	if got, _ := os.ReadFile(blocker); string(got) != "not a directory" {
		t.Errorf("the blocking file was changed to %q", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the blocking file", len(entries))
	}
}

func TestWriteFileNotWritableAsUser(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes into read-only directories; TestWriteFileFailureKeepsOld covers failure as root")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "certificate.pem")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	err := WriteFile(path, []byte("new"), 0o600)
	if !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("err = %v, want permission denied", err)
	}
	wantFile(t, path, []byte("old"), 0o600)
	if l := leftovers(t, path); len(l) > 0 {
		t.Errorf("temporary files left behind: %v", l)
	}
}

func TestWriteFileMkdirMode(t *testing.T) {
	withUmask(t, 0)
	root := t.TempDir()
	path := filepath.Join(root, "greengrass", "credentials", "priv_key")

	// Without MkdirMode a missing directory is an error, and nothing is
	// created.
	if err := WriteFile(path, []byte("k"), 0o600); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("without MkdirMode: err = %v, want not exist", err)
	}
	if _, err := os.Stat(filepath.Join(root, "greengrass")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("without MkdirMode a directory was created: %v", err)
	}

	if err := WriteFile(path, []byte("k"), 0o600, Options{MkdirMode: 0o750}); err != nil {
		t.Fatal(err)
	}
	wantFile(t, path, []byte("k"), 0o600)
	for _, d := range []string{filepath.Join(root, "greengrass"), filepath.Join(root, "greengrass", "credentials")} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != fs.ModeDir|0o750 {
			t.Errorf("%s mode = %v, want drwxr-x---", d, fi.Mode())
		}
	}

	// An existing directory keeps its mode.
	if err := os.Chmod(filepath.Join(root, "greengrass"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("k2"), 0o600, Options{MkdirMode: 0o755}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(root, "greengrass")); fi.Mode() != fs.ModeDir|0o711 {
		t.Errorf("existing directory mode changed to %v", fi.Mode())
	}
}

func TestWriteFileOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can give files away")
	}
	path := filepath.Join(t.TempDir(), "certificate.pem")
	if err := WriteFile(path, []byte("cert"), 0o600, Options{Owner: &Owner{UID: 65534, GID: 65534}}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 65534 || st.Gid != 65534 {
		t.Errorf("owner = %d:%d, want 65534:65534", st.Uid, st.Gid)
	}
	wantFile(t, path, []byte("cert"), 0o600)

	// Without Owner a rewrite belongs to the writer again.
	if err := WriteFile(path, []byte("cert2"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Stat(path)
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid() {
		t.Errorf("owner without Options.Owner = %d:%d, want %d:%d", st.Uid, st.Gid, os.Geteuid(), os.Getegid())
	}
}

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Errorf("SyncDir of a directory: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "absent")
	err := SyncDir(missing)
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "sync directory "+missing+": ") {
		t.Errorf("SyncDir(missing) = %v", err)
	}
}
