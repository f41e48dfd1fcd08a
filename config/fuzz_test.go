package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/failure"
)

// FuzzLoad feeds config.yaml files (and environment overrides, one
// NAME=value a line) to Load: go test -fuzz FuzzLoad ./config. The seeds
// in testdata/fuzz/FuzzLoad (Greengrass lite's own config and variants
// of it) run as a normal test. Relative paths in a seed name the claim
// key, claim certificate and root CA made next to the config file.
//
// What must hold for any input:
//   - Load either returns a config or a *failure.UsageError whose message
//     is one line naming the config file, a flag or an environment
//     variable;
//   - Load writes nothing, accepted or refused: the directory is the same
//     file for file afterwards;
//   - loading the same input twice gives the same result;
//   - a config Load accepts takes the provisioned values (WriteBack), and
//     the file written loads again with those values and every other
//     value as it was: a run must not provision a device and then fail
//     to record it, or change its own configuration by recording it.
func FuzzLoad(f *testing.F) {
	dir := f.TempDir()
	writeSeedPKI(f, dir)
	f.Fuzz(func(t *testing.T, file []byte, env string, skipFileChecks bool) {
		path := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		var environ []string
		for _, kv := range strings.Split(env, "\n") {
			if strings.HasPrefix(kv, EnvPrefix) && kv != EnvConfig && !strings.HasPrefix(kv, EnvConfig+"=") {
				environ = append(environ, kv)
			}
		}
		opts := LoadOptions{Path: path, Environ: environ, SkipFileChecks: skipFileChecks}
		before := dirState(t, dir)
		cfg, err := Load(opts)
		if after := dirState(t, dir); after != before {
			t.Fatalf("Load (err %v) changed the directory:\nbefore\n%s\nafter\n%s", err, before, after)
		}
		cfg2, err2 := Load(opts)
		if fmt.Sprint(err) != fmt.Sprint(err2) || !reflect.DeepEqual(cfg, cfg2) {
			t.Fatalf("two loads of one input differ: %v / %v", err, err2)
		}
		if err != nil {
			var u *failure.UsageError
			if !errors.As(err, &u) {
				t.Fatalf("error %q (%T) is not a usage error", err, err)
			}
			msg := err.Error()
			if msg == "" || strings.ContainsAny(msg, "\n\r") {
				t.Fatalf("error is not one line: %q", msg)
			}
			if !strings.Contains(msg, path) && !strings.Contains(msg, "environment variable") && !strings.Contains(msg, "flag") {
				t.Fatalf("error names neither the file nor an override: %q", msg)
			}
			return
		}

		checkAccepted(t, cfg)

		prov := Provisioned{
			ThingName:           "FuzzThing_1",
			CertificateFilePath: filepath.Join(dir, "out", "certificate.pem"),
			PrivateKeyPath:      filepath.Join(dir, "out", "priv_key"),
			RootCAPath:          filepath.Join(dir, "out", "AmazonRootCA.pem"),
			IoTDataEndpoint:     "example-ats.iot.eu-west-1.amazonaws.com",
			IoTCredEndpoint:     "example.credentials.iot.eu-west-1.amazonaws.com",
		}
		if err := WriteBack(path, prov); err != nil {
			t.Fatalf("Load accepted the config, but the provisioned values cannot be written back: %v", err)
		}
		again, err := Load(opts)
		if err != nil {
			written, _ := os.ReadFile(path)
			t.Fatalf("Load accepted the config, but refuses it once the provisioned values are written: %v\nwritten:\n%s", err, written)
		}
		if again.ThingName != prov.ThingName || again.CertificateFilePath != prov.CertificateFilePath ||
			again.PrivateKeyPath != prov.PrivateKeyPath || again.SystemRootCAPath != prov.RootCAPath {
			t.Fatalf("written back %+v, read back thing %q cert %q key %q root CA %q", prov,
				again.ThingName, again.CertificateFilePath, again.PrivateKeyPath, again.SystemRootCAPath)
		}
		want := *cfg
		want.ThingName, want.CertificateFilePath, want.PrivateKeyPath, want.SystemRootCAPath =
			again.ThingName, again.CertificateFilePath, again.PrivateKeyPath, again.SystemRootCAPath
		want.origin, again.origin = nil, nil
		if !reflect.DeepEqual(&want, again) {
			t.Fatalf("writing the provisioned values changed the configuration:\nbefore %+v\nafter  %+v", want, *again)
		}
	})
}

// writeSeedPKI writes the files the seeds name: claim.key, claim.crt (its
// certificate) and AmazonRootCA1.pem.
func writeSeedPKI(f *testing.F, dir string) {
	mk := func(cn string) (*ecdsa.PrivateKey, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			f.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			f.Fatal(err)
		}
		return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	claim, claimCert := mk("claim")
	_, ca := mk("root CA")
	der, err := x509.MarshalPKCS8PrivateKey(claim)
	if err != nil {
		f.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"claim.key":         pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"claim.crt":         claimCert,
		"AmazonRootCA1.pem": ca,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			f.Fatal(err)
		}
	}
}

// dirState describes every file under dir: name, type, mode and content.
func dirState(t *testing.T, dir string) string {
	t.Helper()
	var b bytes.Buffer
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v", p, fi.Mode())
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %x", sha256.Sum256(data))
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// checkAccepted holds a config Load accepted to what a run relies on
// without checking again: values AWS and the system can take.
func checkAccepted(t *testing.T, c *Config) {
	t.Helper()
	paths := map[string]string{"rootPath": c.RootPath, "outputDir": c.OutputDir, "csrPath": c.CSRPath, "certPath": c.CertPath,
		"journalPath": c.JournalPath, "root CA copy": c.RootCAOutPath, "pluginDir": c.PluginDir}
	for k, v := range map[string]string{"keyPath": c.KeyPath, "claimCertPath": c.ClaimCertPath, "rootCaPath": c.RootCAPath, "stateScriptsDir": c.StateScriptsDir} {
		if v != "" {
			paths[k] = v
		}
	}
	if !IsKeyURI(c.ClaimKeyPath) && !strings.HasPrefix(c.ClaimKeyPath, "handle:") && c.ClaimKeyPath != "" {
		paths["claimKeyPath"] = c.ClaimKeyPath
	}
	for k, v := range paths {
		if !filepath.IsAbs(v) || strings.ContainsRune(v, 0) {
			t.Fatalf("%s %q accepted: not an absolute path the system can open", k, v)
		}
	}
	if c.TemplateName != "" && !templateNameRE.MatchString(c.TemplateName) || len(c.TemplateName) > maxTemplateName {
		t.Fatalf("templateName %q accepted", c.TemplateName)
	}
	if c.IoTDataEndpoint != "" && c.IoTDataHost == "" {
		t.Fatalf("iotDataEndpoint %q accepted without a host", c.IoTDataEndpoint)
	}
	if c.MQTTPort < 1 || c.MQTTPort > 65535 {
		t.Fatalf("port %d accepted", c.MQTTPort)
	}
	for k, d := range map[string]time.Duration{"requestTimeout": c.RequestTimeout, "connectTimeout": c.ConnectTimeout, "retryDeadline": c.RetryDeadline,
		"tokenLifetime": c.TokenLifetime, "stateScriptTimeout": c.StateScriptTimeout} {
		if d <= 0 {
			t.Fatalf("%s %v accepted", k, d)
		}
	}
	if c.TokenMargin < 0 || c.TokenMargin >= c.TokenLifetime {
		t.Fatalf("tokenMargin %v with tokenLifetime %v accepted", c.TokenMargin, c.TokenLifetime)
	}
	if len(c.ClientID) > maxClientID {
		t.Fatalf("%d-byte clientId accepted", len(c.ClientID))
	}
}
