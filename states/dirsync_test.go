package states

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"

	"github.com/fleetprov/fleetprov/atomicfile/atomicfiletest"
	"github.com/fleetprov/fleetprov/config"
)

// In create-keys mode PrepareKey only moves the old key aside; the new one
// is written by CreateCertificate after the journal has moved on. The move
// must be durable by then, or a power cut could bring the old key back to
// be overwritten with no backup.
func TestPrepareKeyCreateKeysSyncsBackup(t *testing.T) {
	d := newDevice(t, nil)
	d.cfg.CertificateMode = config.ModeCreateKeys
	dir := filepath.Dir(d.cfg.KeyPath)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.cfg.KeyPath, []byte("old key"), 0o600); err != nil {
		t.Fatal(err)
	}
	syncs := atomicfiletest.Record(t)
	if err := (&PrepareKey{}).Run(context.Background(), d.run(true)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.cfg.KeyPath + ".bak-20260304T050607Z"); err != nil {
		t.Fatalf("old key not kept as backup: %v", err)
	}
	if n := syncs.Count(dir); n != 1 {
		t.Errorf("%s fsynced %d times after the old key was moved aside, want once", dir, n)
	}
}

// Persist into an output directory that does not exist yet: every
// directory it makes is durable, as is each file in it.
func TestPersistSyncsNewOutputDirectories(t *testing.T) {
	d := newDevice(t, nil)
	root := t.TempDir()
	out := filepath.Join(root, "greengrass", "credentials")
	d.cfg.CertPath = filepath.Join(out, "certificate.pem")
	d.cfg.RootCAOutPath = filepath.Join(out, "AmazonRootCA.pem")
	d.cfg.KeyPath = ""
	d.cfg.PosixUser = "" // no chown, so only the writes are counted
	r := d.run(true)
	r.Data.CertificatePEM, r.Data.ThingName = "-----BEGIN CERTIFICATE-----\n", "thing"
	var missing []string // files not yet in out when it was synced
	syncs := atomicfiletest.RecordWith(t, func(dir string) {
		if dir == out {
			missing = missingFiles(out, "certificate.pem", "AmazonRootCA.pem", "deviceConfiguration.json")
		}
	})
	if err := (&Persist{}).Run(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{root, filepath.Join(root, "greengrass")} {
		if n := syncs.Count(dir); n != 1 {
			t.Errorf("%s fsynced %d times, want once (it gained a directory)", dir, n)
		}
	}
	// Once, after all three files are in place: each sync costs as much
	// as a file's.
	if n := syncs.Count(out); n != 1 {
		t.Errorf("%s fsynced %d times, want once, after its three files", out, n)
	}
	if len(missing) > 0 {
		t.Errorf("%s synced before %v were renamed into it", out, missing)
	}
}

// missingFiles lists which of names are not in dir.
func missingFiles(dir string, names ...string) []string {
	var out []string
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join(dir, n)); err != nil {
			out = append(out, n)
		}
	}
	return out
}

// Run as root, Persist gives an existing credentials directory to
// posixUser; that change is fsynced too, or after a power cut Greengrass
// could find a config naming credentials in a directory it cannot enter.
func TestPersistSyncsOwnerOfExistingDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root gives directories to posixUser")
	}
	if _, err := user.LookupGroup("nogroup"); err != nil {
		t.Skipf("no group nogroup here: %v", err)
	}
	d := newDevice(t, func(s string) string {
		return regexp.MustCompile(`posixUser: ".*"`).ReplaceAllString(s, `posixUser: "nobody:nogroup"`)
	})
	if err := os.MkdirAll(d.cfg.OutputDir, 0o700); err != nil {
		t.Fatal(err)
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody here: %v", err)
	}
	// What the directory's one sync covered: its owner at that moment,
	// and the files then in it.
	ownerAtSync, missing := "", []string(nil)
	syncs := atomicfiletest.RecordWith(t, func(dir string) {
		if dir == filepath.Clean(d.cfg.OutputDir) {
			ownerAtSync = ownerOf(t, dir)
			missing = missingFiles(dir, "certificate.pem", "AmazonRootCA.pem", "deviceConfiguration.json")
		}
	})
	if err := (&Persist{}).Run(context.Background(), registeredRun(t, d)); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if n := syncs.Count(d.cfg.OutputDir); n != 1 {
		t.Errorf("%s fsynced %d times, want once, after its files and its new owner", d.cfg.OutputDir, n)
	}
	if ownerAtSync != nobody.Uid {
		t.Errorf("%s synced while owned by uid %s, before it was given to nobody (uid %s)", d.cfg.OutputDir, ownerAtSync, nobody.Uid)
	}
	if len(missing) > 0 {
		t.Errorf("%s synced before %v were renamed into it", d.cfg.OutputDir, missing)
	}
}

func ownerOf(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return strconv.FormatUint(uint64(fi.Sys().(*syscall.Stat_t).Uid), 10)
}
