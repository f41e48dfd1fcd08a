package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// pki is a claim key, its certificate, a root CA and a second key that
// does not match the certificate, all as PEM files in one directory.
type pki struct {
	dir, key, cert, ca, otherKey string
}

func newPKI(t *testing.T, dir string) pki {
	t.Helper()
	p := pki{
		dir:      dir,
		key:      filepath.Join(dir, "claim.key"),
		cert:     filepath.Join(dir, "claim.crt"),
		ca:       filepath.Join(dir, "AmazonRootCA1.pem"),
		otherKey: filepath.Join(dir, "other.key"),
	}
	key := writeKey(t, p.key)
	writeKey(t, p.otherKey)
	writeCert(t, p.cert, key, "claim")
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	writeCert(t, p.ca, caKey, "root CA")
	return p
}

func writeKey(t *testing.T, path string) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	return key
}

func writeCert(t *testing.T, path string, key *ecdsa.PrivateKey, cn string) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// fp builds a config.yaml whose fleet_provisioning configuration holds
// keys (raw YAML values), written in sorted order.
func fp(rootPath string, keys map[string]string) string {
	var b strings.Builder
	b.WriteString("system:\n  rootPath: \"" + rootPath + "\"\n  certificateFilePath: \"\"\n")
	b.WriteString("services:\n  aws.greengrass.NucleusLite:\n    configuration:\n      awsRegion: \"us-east-1\"\n      runWithDefault:\n        posixUser: \"ggcore:ggcore\"\n")
	b.WriteString("  aws.greengrass.fleet_provisioning:\n    configuration:\n")
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		b.WriteString("      " + k + ": " + keys[k] + "\n")
	}
	return b.String()
}

// goodKeys is a complete, valid fleet_provisioning configuration for p.
func goodKeys(p pki) map[string]string {
	return map[string]string{
		"claimCertPath":   q(p.cert),
		"claimKeyPath":    q(p.key),
		"rootCaPath":      q(p.ca),
		"templateName":    `"GreengrassFleetProvisioningTemplate"`,
		"templateParams":  `'{"SerialNumber": "a2_b9_d2_5a_fd_f9"}'`,
		"iotDataEndpoint": `"aaaaaaaaaaaaaa-ats.iot.us-east-1.amazonaws.com"`,
		"iotCredEndpoint": `"cccccccccccccc.credentials.iot.us-east-1.amazonaws.com"`,
	}
}

func q(s string) string { return `"` + s + `"` }

// parseFlags registers fleetprov's flags on a new set and parses args.
func parseFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return fs
}
