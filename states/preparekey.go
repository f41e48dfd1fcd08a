package states

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fleetprov/fleetprov/atomicfile"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/faultpoint"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// PrepareKey makes the device's own key in the key store and a CSR signed by
// it. The private key never leaves the store; the CSR is built through a
// crypto.Signer backed by it. In the create-keys certificate mode the cloud
// makes the key instead, and PrepareKey only clears the way for it.
type PrepareKey struct{}

var _ engine.State = (*PrepareKey)(nil)

func (*PrepareKey) Run(ctx context.Context, r *engine.Run) error {
	cfg := r.Config
	uri := cfg.KeyURI
	ks, err := keystore.Open(uri)
	if err != nil {
		return err
	}
	defer ks.Close()
	owner, err := fileOwner(cfg)
	if err != nil {
		return err
	}

	if cfg.CertificateMode == config.ModeCreateKeys {
		return prepareForCloudKey(r, uri)
	}

	_, err = ks.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: uri})
	exists := err == nil
	if err != nil && !errors.Is(err, keystore.ErrKeyNotFound) {
		if !r.Fresh || cfg.KeyPath == "" {
			// In a token, this is the token or its PIN failing, not a
			// leftover key that could be set aside.
			return fmt.Errorf("device key: %w", err)
		}
		exists = true // an unreadable leftover file: set it aside below
	}
	// A key in a token cannot be set aside: found on resume, it is the
	// one the run that stopped here made.
	if exists && (!r.Fresh || (r.Resumed && cfg.KeyPath == "")) {
		// Resumed: the key was made by the run that stopped here. Reuse it,
		// so a certificate already issued for it stays valid.
		r.Log.Info("reusing existing device key", "key", uri)
	} else {
		if exists && cfg.KeyPath != "" {
			// Provisioning afresh over an old key (--force, reset, or a
			// leftover file): keep the old one as a backup, never destroy it.
			bak := engine.BackupName(cfg.KeyPath, r.Now())
			faultpoint.Hit(faultpoint.RenameBefore, cfg.KeyPath)
			if err := os.Rename(cfg.KeyPath, bak); err != nil {
				return fmt.Errorf("keep old key %s as backup: %w", cfg.KeyPath, err)
			}
			faultpoint.Hit(faultpoint.RenameAfter, cfg.KeyPath)
			r.Log.Info("kept old device key as backup", "backup", bak)
		}
		// A key found in a token on a fresh run is not ours to replace:
		// the store refuses (keystore.ErrKeyExists) and the user decides.
		if _, err := ks.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: keystore.Algorithm(cfg.KeyAlgorithm), Owner: owner}); err != nil {
			if errors.Is(err, keystore.ErrKeyExists) {
				return fmt.Errorf("create device key: %w: it predates this provisioning (reset or --force); delete it from the token or name another object in keyPath", err)
			}
			return fmt.Errorf("create device key: %w", err)
		}
		r.Log.Info("created device key", "key", uri, "algorithm", cfg.KeyAlgorithm)
	}

	signer, err := ks.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: uri})
	if err != nil {
		return fmt.Errorf("device key: %w", err)
	}
	csr, err := keystore.CreateCSR(signer, cfg.CSRCommonName)
	if err != nil {
		return err
	}
	opts := atomicfile.Options{MkdirMode: 0o755}
	if owner != nil {
		opts.Owner = &atomicfile.Owner{UID: owner.UID, GID: owner.GID}
	}
	if err := atomicfile.WriteFile(cfg.CSRPath, csr, 0o644, opts); err != nil {
		return err
	}
	r.Data.KeyURI = uri
	r.Data.KeyAlgorithm = cfg.KeyAlgorithm
	r.Data.CSRPEM = string(csr)
	r.Data.NewKey = false // made: a resumed run reuses it from now on
	return nil
}

// prepareForCloudKey readies the create-keys mode, where the cloud makes the
// key pair and CreateCertificate stores it. There is no CSR; all that is left
// to do here is keep an old key as a backup when provisioning afresh. A key
// found on resume belongs to a certificate that never reached the journal and
// will be replaced.
func prepareForCloudKey(r *engine.Run, uri string) error {
	path := r.Config.KeyPath
	if _, err := os.Lstat(path); err == nil && r.Fresh {
		bak := engine.BackupName(path, r.Now())
		faultpoint.Hit(faultpoint.RenameBefore, path)
		if err := os.Rename(path, bak); err != nil {
			return fmt.Errorf("keep old key %s as backup: %w", path, err)
		}
		faultpoint.Hit(faultpoint.RenameAfter, path)
		// Nothing else is written in this directory before the journal
		// moves on, and a rename lost to a power cut would let
		// CreateCertificate write the new key over the old one.
		if err := atomicfile.SyncDir(filepath.Dir(path)); err != nil {
			return err
		}
		r.Log.Info("kept old device key as backup", "backup", bak)
	}
	r.Data.KeyURI, r.Data.KeyAlgorithm, r.Data.CSRPEM = uri, "", ""
	r.Data.NewKey = false
	return nil
}
