package states

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// CheckProvisioned verifies what "already provisioned" rests on: the
// certificate config.yaml names exists and is a certificate, and it is
// for the device key config.yaml names. A device whose credentials were
// moved or replaced (a reset cut short before fleetprov finished such
// resets, a file restored from an old backup) must not pass for one that
// can connect.
func CheckProvisioned(ctx context.Context, cfg *config.Config) error {
	certPath := cfg.CertificateFilePath
	if certPath == "" {
		return errors.New("system.certificateFilePath is empty")
	}
	b, err := os.ReadFile(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("system.certificateFilePath %s does not exist", certPath)
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is in the message already
		}
		return fmt.Errorf("system.certificateFilePath %s cannot be read (%w)", certPath, err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return fmt.Errorf("system.certificateFilePath %s holds no PEM certificate", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("system.certificateFilePath %s: %w", certPath, err)
	}
	uri := cfg.KeyURI
	if p := cfg.PrivateKeyPath; p != "" && !config.IsKeyURI(p) {
		uri = keystore.FileURI(p)
	}
	ks, err := keystore.Open(uri)
	if err != nil {
		return fmt.Errorf("system.privateKeyPath: %w", err)
	}
	defer ks.Close()
	pub, err := ks.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: uri})
	if err != nil {
		return fmt.Errorf("system.privateKeyPath %s: %w", cfg.PrivateKeyPath, err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if e, ok := pub.(equaler); !ok || !e.Equal(cert.PublicKey) {
		return errors.New("the certificate at system.certificateFilePath " + certPath + " is not for the key at system.privateKeyPath " + cfg.PrivateKeyPath)
	}
	return nil
}
