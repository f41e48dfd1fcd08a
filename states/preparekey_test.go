package states

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/plugins/keystore"
)

func TestPrepareKeyFresh(t *testing.T) {
	tests := []struct {
		alg   string
		check func(t *testing.T, pub any)
	}{
		{"ecdsa-p256", func(t *testing.T, pub any) { wantCurve(t, pub, elliptic.P256()) }},
		{"ecdsa-p384", func(t *testing.T, pub any) { wantCurve(t, pub, elliptic.P384()) }},
		{"rsa-2048", func(t *testing.T, pub any) { wantRSABits(t, pub, 2048) }},
		{"rsa-3072", func(t *testing.T, pub any) { wantRSABits(t, pub, 3072) }},
	}
	for _, tc := range tests {
		t.Run(tc.alg, func(t *testing.T) {
			d := newDevice(t, replaceLine(t,
				`csrCommonName: "aws-greengrass-nucleus-lite"`,
				`csrCommonName: "line-7-press"`+"\n      keyAlgorithm: "+tc.alg))
			cfg := d.cfg
			r := d.run(true)
			if err := (&PrepareKey{}).Run(context.Background(), r); err != nil {
				t.Fatalf("PrepareKey: %v", err)
			}

			if m := mode(t, cfg.KeyPath); m != 0o600 {
				t.Errorf("key %s mode = %v, want -rw-------", cfg.KeyPath, m)
			}
			key := parseKey(t, cfg.KeyPath)
			tc.check(t, key.Public())

			csrPEM := readFile(t, cfg.CSRPath)
			csr := parseCSR(t, csrPEM)
			if got := csr.Subject.String(); got != "CN=line-7-press" {
				t.Errorf("CSR subject = %q, want CN=line-7-press (csrCommonName)", got)
			}
			if !reflect.DeepEqual(csr.PublicKey, key.Public()) {
				t.Error("the CSR's public key is not the device key's")
			}
			if r.Data.CSRPEM != string(csrPEM) {
				t.Error("Data.CSRPEM differs from the CSR written to csrPath")
			}
			if want := keystore.FileURI(cfg.KeyPath); r.Data.KeyURI != want {
				t.Errorf("Data.KeyURI = %q, want %q", r.Data.KeyURI, want)
			}
			if r.Data.KeyAlgorithm != tc.alg {
				t.Errorf("Data.KeyAlgorithm = %q, want %q", r.Data.KeyAlgorithm, tc.alg)
			}
			if b := backups(t, cfg.KeyPath); len(b) != 0 {
				t.Errorf("a fresh run on a clean device made backups: %v", b)
			}
		})
	}
}

func wantCurve(t *testing.T, pub any, c elliptic.Curve) {
	t.Helper()
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != c {
		t.Fatalf("key %T is not on %s", pub, c.Params().Name)
	}
}

func wantRSABits(t *testing.T, pub any, bits int) {
	t.Helper()
	k, ok := pub.(*rsa.PublicKey)
	if !ok || k.N.BitLen() != bits {
		t.Fatalf("key %T is not RSA-%d", pub, bits)
	}
}

func backups(t *testing.T, keyPath string) []string {
	t.Helper()
	m, err := filepath.Glob(keyPath + ".bak-*")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A run that stopped after PrepareKey (or after CreateCertificate) resumes
// with the same key: the certificate the cloud may already have issued is
// for that key.
func TestPrepareKeyResumedReusesKey(t *testing.T) {
	d := newDevice(t, nil)
	cfg := d.cfg
	if err := (&PrepareKey{}).Run(context.Background(), d.run(true)); err != nil {
		t.Fatal(err)
	}
	before := readFile(t, cfg.KeyPath)
	pub := parseKey(t, cfg.KeyPath).Public()
	info, _ := os.Stat(cfg.KeyPath)

	r := d.run(false)
	if err := (&PrepareKey{}).Run(context.Background(), r); err != nil {
		t.Fatalf("resumed PrepareKey: %v", err)
	}
	if !bytes.Equal(readFile(t, cfg.KeyPath), before) {
		t.Error("the resumed run changed the key file")
	}
	if after, _ := os.Stat(cfg.KeyPath); !os.SameFile(info, after) {
		t.Error("the resumed run replaced the key file")
	}
	csr := parseCSR(t, readFile(t, cfg.CSRPath))
	if !reflect.DeepEqual(csr.PublicKey, pub) {
		t.Error("the resumed run's CSR is not for the existing key")
	}
	if r.Data.CSRPEM == "" || r.Data.KeyURI != keystore.FileURI(cfg.KeyPath) {
		t.Errorf("resumed run left Data incomplete: KeyURI %q, CSR %d bytes", r.Data.KeyURI, len(r.Data.CSRPEM))
	}
	if b := backups(t, cfg.KeyPath); len(b) != 0 {
		t.Errorf("a resumed run made backups: %v", b)
	}
}

// A resumed run whose key is gone (deleted by hand, or the crash came
// before the key was saved) makes one rather than failing.
func TestPrepareKeyResumedWithoutKeyCreatesOne(t *testing.T) {
	d := newDevice(t, nil)
	r := d.run(false)
	if err := (&PrepareKey{}).Run(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	csr := parseCSR(t, readFile(t, d.cfg.CSRPath))
	if !reflect.DeepEqual(csr.PublicKey, parseKey(t, d.cfg.KeyPath).Public()) {
		t.Error("CSR is not for the key created")
	}
}

// Provisioning afresh over an existing key never destroys it: it is kept
// as priv_key.bak-<UTC time>.
func TestPrepareKeyFreshKeepsOldKeyAsBackup(t *testing.T) {
	d := newDevice(t, nil)
	cfg := d.cfg
	if err := (&PrepareKey{}).Run(context.Background(), d.run(true)); err != nil {
		t.Fatal(err)
	}
	old := readFile(t, cfg.KeyPath)
	oldPub := parseKey(t, cfg.KeyPath).Public()

	if err := (&PrepareKey{}).Run(context.Background(), d.run(true)); err != nil {
		t.Fatalf("second fresh PrepareKey: %v", err)
	}
	bak := cfg.KeyPath + ".bak-20260304T050607Z"
	if got := backups(t, cfg.KeyPath); !reflect.DeepEqual(got, []string{bak}) {
		t.Fatalf("backups = %v, want [%s]", got, bak)
	}
	if !bytes.Equal(readFile(t, bak), old) {
		t.Error("the backup is not the old key")
	}
	if m := mode(t, bak); m != 0o600 {
		t.Errorf("backup mode = %v, want -rw-------", m)
	}
	newPub := parseKey(t, cfg.KeyPath).Public()
	if reflect.DeepEqual(newPub, oldPub) {
		t.Error("the fresh run kept the old key instead of making a new one")
	}
	if m := mode(t, cfg.KeyPath); m != 0o600 {
		t.Errorf("new key mode = %v, want -rw-------", m)
	}
	if csr := parseCSR(t, readFile(t, cfg.CSRPath)); !reflect.DeepEqual(csr.PublicKey, newPub) {
		t.Error("the CSR is not for the new key")
	}
}

// A leftover key file that cannot be read is set aside on a fresh run, but
// stops a resumed one: a certificate may already exist for the key it was.
func TestPrepareKeyUnreadableKey(t *testing.T) {
	garbage := []byte("-----BEGIN PRIVATE KEY-----\nTUlJQ1NFQ1JFVA==\n-----END PRIVATE KEY-----\n")

	t.Run("resumed", func(t *testing.T) {
		d := newDevice(t, nil)
		if err := os.MkdirAll(filepath.Dir(d.cfg.KeyPath), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(d.cfg.KeyPath, garbage, 0o600); err != nil {
			t.Fatal(err)
		}
		err := (&PrepareKey{}).Run(context.Background(), d.run(false))
		want := "device key: " + d.cfg.KeyPath + ": malformed PRIVATE KEY block"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %q", err, want)
		}
		if strings.Contains(err.Error(), "TUlJ") {
			t.Error("the error echoes the key file's content")
		}
		if !bytes.Equal(readFile(t, d.cfg.KeyPath), garbage) {
			t.Error("the resumed run changed the unreadable key")
		}
		wantAbsent(t, d.cfg.CSRPath)
	})

	t.Run("fresh", func(t *testing.T) {
		d := newDevice(t, nil)
		if err := os.MkdirAll(filepath.Dir(d.cfg.KeyPath), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(d.cfg.KeyPath, garbage, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := (&PrepareKey{}).Run(context.Background(), d.run(true)); err != nil {
			t.Fatalf("PrepareKey: %v", err)
		}
		bak := d.cfg.KeyPath + ".bak-20260304T050607Z"
		if !bytes.Equal(readFile(t, bak), garbage) {
			t.Error("the unreadable key was not kept as a backup")
		}
		parseKey(t, d.cfg.KeyPath)
	})
}

// Two fresh runs in the same second (reset, then run --force straight
// away, or a clock that has not been set yet and reads the same time after
// every boot) must not overwrite the first backup with the second.
func TestPrepareKeyBackupsNeverOverwritten(t *testing.T) {
	d := newDevice(t, nil)
	cfg := d.cfg
	var keys [][]byte
	for range 3 {
		if err := (&PrepareKey{}).Run(context.Background(), d.run(true)); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, readFile(t, cfg.KeyPath))
	}
	// The first two keys are backups now, each under its own name.
	first := cfg.KeyPath + ".bak-20260304T050607Z"
	second := first + ".2"
	if got := backups(t, cfg.KeyPath); !reflect.DeepEqual(got, []string{first, second}) {
		t.Fatalf("backups = %v, want [%s %s]", got, first, second)
	}
	if !bytes.Equal(readFile(t, first), keys[0]) {
		t.Error("the first key was destroyed: " + first + " does not hold it")
	}
	if !bytes.Equal(readFile(t, second), keys[1]) {
		t.Error("the second key was destroyed: " + second + " does not hold it")
	}
}
