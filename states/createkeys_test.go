package states

import (
	"context"
	"crypto/rsa"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// widenClaimPolicy lets the claim use CreateKeysAndCertificate, which the
// Greengrass lite claim policy (CSR flow only) does not allow.
func widenClaimPolicy(t *testing.T, d *device) {
	t.Helper()
	policy := filepath.Join(d.dir, "policies", "GreengrassProvisioningClaimPolicy.json")
	raw := readFile(t, policy)
	wide := strings.ReplaceAll(string(raw), "certificates/create-from-csr/*", "certificates/create*")
	if err := os.WriteFile(policy, []byte(wide), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCreateKeysMode(t *testing.T) {
	for _, format := range []string{config.FormatJSON, config.FormatCBOR} {
		t.Run(format, func(t *testing.T) {
			d := newDevice(t, nil)
			d.cfg.CertificateMode = config.ModeCreateKeys
			d.cfg.PayloadFormat = format
			widenClaimPolicy(t, d)
			d.startCloud(t)

			// A key left from an earlier identity is kept as a backup.
			if err := os.MkdirAll(filepath.Dir(d.cfg.KeyPath), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(d.cfg.KeyPath, []byte("old key"), 0o600); err != nil {
				t.Fatal(err)
			}
			r := d.run(true)
			if err := (&PrepareKey{}).Run(context.Background(), r); err != nil {
				t.Fatalf("PrepareKey: %v", err)
			}
			if r.Data.CSRPEM != "" {
				t.Errorf("a CSR was made in create-keys mode")
			}
			if _, err := os.Stat(d.cfg.KeyPath); !os.IsNotExist(err) {
				t.Errorf("PrepareKey left a key at %s in create-keys mode", d.cfg.KeyPath)
			}
			if got := string(readFile(t, d.cfg.KeyPath+".bak-20260304T050607Z")); got != "old key" {
				t.Errorf("old key backup holds %q", got)
			}

			s := session(t)
			if err := (&CreateCertificate{Session: s}).Run(context.Background(), r); err != nil {
				t.Fatalf("CreateCertificate: %v", err)
			}
			if r.Data.CertificateID == "" || r.Data.OwnershipToken == "" || r.Data.KeyURI != keystore.FileURI(d.cfg.KeyPath) {
				t.Errorf("Data after create-keys: %+v", r.Data)
			}
			key, err := keystore.ParsePrivateKeyPEM(readFile(t, d.cfg.KeyPath), d.cfg.KeyPath)
			if err != nil {
				t.Fatal(err)
			}
			if pub, ok := key.Public().(*rsa.PublicKey); !ok || pub.N.BitLen() != 2048 {
				t.Errorf("stored key is %T, want the cloud's RSA-2048 key", key.Public())
			}
			if m := mode(t, d.cfg.KeyPath); m != 0o600 {
				t.Errorf("stored key mode %v, want 0600", m)
			}
			cert, err := parseCertPEM(r.Data.CertificatePEM)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cert.PublicKey, key.Public()) {
				t.Errorf("journaled certificate is not for the stored key")
			}

			if err := (&RegisterThing{Session: s}).Run(context.Background(), r); err != nil {
				t.Fatalf("RegisterThing: %v", err)
			}
			if r.Data.ThingName != testThing {
				t.Errorf("thing %q", r.Data.ThingName)
			}
		})
	}
}

// The Greengrass lite claim policy allows only the CSR flow: asking for
// keys is refused with a message that points at the policy.
func TestCreateKeysRefusedByClaimPolicy(t *testing.T) {
	d := newDevice(t, nil)
	d.cfg.CertificateMode = config.ModeCreateKeys
	d.startCloud(t)
	r := d.run(true)
	if err := (&PrepareKey{}).Run(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	err := (&CreateCertificate{Session: session(t)}).Run(context.Background(), r)
	if err == nil || !strings.Contains(err.Error(), "check that the claim policy allows iot:Subscribe") {
		t.Fatalf("err = %v", err)
	}
	if failure.IsTransient(err) {
		t.Errorf("a policy refusal is retried: it will not clear by itself")
	}
	if _, statErr := os.Stat(d.cfg.KeyPath); !os.IsNotExist(statErr) {
		t.Errorf("a key was stored although no certificate came")
	}
}
