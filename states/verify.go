package states

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fleetprov/fleetprov/atomicfile"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/internal/iotclient"
)

// Verify connects once with the certificate Persist wrote and the device
// key, client id = the thing name, as Greengrass will: a policy that
// refuses that client id, or a certificate the cloud does not take, shows
// here, before services restart onto an identity that cannot connect.
// With retireClaim it then deletes the claim certificate and key.
type Verify struct{}

var _ engine.State = (*Verify)(nil)

func (*Verify) Run(ctx context.Context, r *engine.Run) error {
	cfg, d := r.Config, r.Data
	if !cfg.Verify {
		r.Log.Info("verification skipped (verify: false)")
		return nil
	}
	if d.ThingName == "" {
		return errors.New("journal has no registered thing to verify: run `fleetprov reset` and provision again")
	}
	cert, closeKey, err := deviceCertificate(ctx, r)
	if err != nil {
		return err
	}
	defer closeKey()
	err = iotclient.ConnectOnce(ctx, iotclient.Options{
		Endpoint: cfg.IoTDataHost,
		Port:     cfg.MQTTPort,
		// The copy Greengrass will read (system.rootCaPath).
		RootCAPath:     cfg.RootCAOutPath,
		ClientCert:     cert,
		ClientID:       d.ThingName,
		ConnectTimeout: cfg.ConnectTimeout,
		Logger:         r.Log,
		Format:         cfg.PayloadFormat,
		ALPN:           cfg.MQTTALPN,
		Proxy:          EndpointProxy(cfg),
	})
	if err != nil {
		return verifyFailure(cfg, d, cert.Leaf, err)
	}
	d.VerifiedAt = r.Now().UTC()
	r.Log.Info("new certificate verified", "endpoint", cfg.IoTDataHost, "clientId", d.ThingName, "certificateId", certificateID(cert.Leaf))
	if cfg.RetireClaim {
		return retireClaim(r)
	}
	return nil
}

// deviceCertificate pairs the certificate file Persist wrote with the
// device key in its key store, checking they belong together.
func deviceCertificate(ctx context.Context, r *engine.Run) (*tls.Certificate, func(), error) {
	cfg := r.Config
	b, err := os.ReadFile(cfg.CertPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read the device certificate: %w: run `fleetprov reset` and provision again", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("device certificate %s holds no PEM certificate: run `fleetprov reset` and provision again", cfg.CertPath)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("device certificate %s: %w", cfg.CertPath, err)
	}
	signer, closeKey, uri, err := deviceSigner(ctx, r, leaf.PublicKey)
	if errors.Is(err, errKeyReplaced) {
		return nil, nil, fmt.Errorf("device certificate %s is not for the device key %s: run `fleetprov reset` and provision again", cfg.CertPath, uri)
	}
	if err != nil {
		return nil, nil, err
	}
	cert := &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: signer, Leaf: leaf}
	return cert, closeKey, nil
}

// verifyFailure turns a failed verifying connection into one line saying
// what the cloud refused and what to check. A refusal is fatal: the same
// certificate and client id are refused every time. Anything else (no
// network, a timeout, a busy cloud) keeps its class and is retried.
func verifyFailure(cfg *config.Config, d *engine.Data, leaf *x509.Certificate, err error) error {
	if failure.IsTransient(err) {
		return fmt.Errorf("verify the new certificate: %w", err)
	}
	id := certificateID(leaf)
	code, alert, refused := iotclient.Refusal(err)
	switch {
	case refused && code == 0x87:
		// AWS IoT says no more than "not authorized"; the policies are
		// the ones the provisioning template attached.
		return &verifyError{err: err, msg: fmt.Sprintf("the cloud refused client id %q for certificate %s (CONNACK 0x87 not authorized): the policies template %s attaches to it must allow iot:Connect on client/%s",
			d.ThingName, id, cfg.TemplateName, d.ThingName)}
	case refused && code != 0:
		return &verifyError{err: err, msg: fmt.Sprintf("the cloud refused client id %q for certificate %s (CONNACK 0x%02x %s)",
			d.ThingName, id, code, iotclient.ReasonName(code))}
	case refused:
		return &verifyError{err: err, msg: fmt.Sprintf("the cloud refused certificate %s in the TLS handshake (alert %q): check that it is ACTIVE and that the cloud knows its CA",
			id, alert)}
	}
	return fmt.Errorf("verify the new certificate: %w", err)
}

// verifyError is a refusal told in one line; the connection's own error
// stays reachable with errors.As.
type verifyError struct {
	msg string
	err error
}

func (e *verifyError) Error() string { return e.msg }
func (e *verifyError) Unwrap() error { return e.err }

// retireClaim deletes the claim certificate and key for good, key first:
// a run killed between the two finds one gone and removes the other. A
// file already gone counts as retired.
func retireClaim(r *engine.Run) error {
	cfg := r.Config
	files := []string{cfg.ClaimKeyPath, cfg.ClaimCertPath}
	for _, p := range files {
		if err := refuseDeviceFile(cfg, p); err != nil {
			return err
		}
	}
	for _, p := range files {
		if err := atomicfile.RemoveSecret(p); err != nil {
			return fmt.Errorf("retire the claim: %w", err)
		}
	}
	r.Data.ClaimRetired = files
	r.Log.Info("claim retired: its certificate and key were overwritten and deleted", "claimKeyPath", cfg.ClaimKeyPath, "claimCertPath", cfg.ClaimCertPath)
	return nil
}

// refuseDeviceFile stops retirement from deleting a file the provisioned
// device needs, should a claim path name one of them.
func refuseDeviceFile(cfg *config.Config, claim string) error {
	ci, err := os.Stat(claim)
	if err != nil {
		return nil // gone already, or RemoveSecret says why
	}
	for _, p := range []string{cfg.CertPath, cfg.KeyPath, cfg.RootCAOutPath, cfg.RootCAPath, cfg.File, DeviceConfigurationPath(cfg)} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil && os.SameFile(ci, fi) {
			return fmt.Errorf("retire the claim: %s is also %s, which the device needs: point claimCertPath and claimKeyPath at the claim's own files", claim, filepath.Clean(p))
		}
	}
	return nil
}

// certificateID is AWS IoT's id of a certificate: the SHA-256 of its DER.
func certificateID(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
