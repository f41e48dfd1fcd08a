package cloudtest

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/fleetprov/fleetprov/cloudsim"
)

// StartWithFaults is Start with the emulator's faults given as serve's
// --fault specs.
func StartWithFaults(t testing.TB, specs ...string) (string, *cloudsim.Server) {
	t.Helper()
	var faults []cloudsim.Fault
	for _, spec := range specs {
		f, err := cloudsim.ParseFault(spec)
		if err != nil {
			t.Fatal(err)
		}
		faults = append(faults, f)
	}
	return Start(t, cloudsim.Options{Faults: faults}, nil)
}

// DeviceCertificates counts the certificates the local cloud in dir has
// issued to devices (every one but the claim's), whatever their status.
func DeviceCertificates(t testing.TB, dir string) int {
	t.Helper()
	reg, err := cloudsim.ReadRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range reg.SortedCertificates() {
		if !c.Claim {
			n++
		}
	}
	return n
}

// ReadCert reads the PEM certificate at path.
func ReadCert(t testing.TB, path string) *x509.Certificate {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(raw)
	if b == nil {
		t.Fatalf("%s is not PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// CheckNoDeviceKeyFile fails t if any file under the local cloud's dir
// holds a private key other than those the cloud made (its CA, its
// server, the claim), in PEM or DER: a device key kept in a token or a
// TPM must not also be on disk.
func CheckNoDeviceKeyFile(t testing.TB, dir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "device", "credentials", "priv_key")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a device key file exists: %v", err)
	}
	cloudKeys := map[string]bool{"ca.key": true, "server.pem.key": true, "claim.pem.key": true}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if cloudKeys[rel] {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, pkcs8 := x509.ParsePKCS8PrivateKey(b)
		_, sec1 := x509.ParseECPrivateKey(b)
		if bytes.Contains(b, []byte("PRIVATE KEY")) || pkcs8 == nil || sec1 == nil {
			t.Errorf("%s holds a private key", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ExitCode is the exit status of a command that ran: 0 for no error, -1
// for one that did not start.
func ExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
