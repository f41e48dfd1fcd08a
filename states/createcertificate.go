package states

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"reflect"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// CreateCertificate sends the CSR with CreateCertificateFromCsr over the
// claim connection and keeps the certificate and its ownership token; in the
// create-keys mode it asks CreateKeysAndCertificate instead and stores the
// key it gets.
type CreateCertificate struct{ Session *Session }

var _ engine.State = (*CreateCertificate)(nil)

// ErrPriorCertificateActive: a certificate given up on is ACTIVE in the
// cloud, so its registration went through; the device never learned the
// thing it made, and another certificate would be a second ACTIVE one.
var ErrPriorCertificateActive = errors.New("is ACTIVE in the cloud: the thing was registered but the answer never arrived, and another certificate would make two ACTIVE ones")

func (s *CreateCertificate) Run(ctx context.Context, r *engine.Run) error {
	if err := s.checkPrior(ctx, r); err != nil {
		return err
	}
	if r.Config.CertificateMode == config.ModeCreateKeys {
		return s.createKeys(ctx, r)
	}
	if r.Data.CSRPEM == "" {
		return errors.New("no CSR in the journal: run `fleetprov reset` and provision again")
	}
	c, err := s.Session.get(ctx, r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.Config.RequestTimeout)
	defer cancel()
	res, err := c.CreateCertificateFromCsr(ctx, r.Data.CSRPEM)
	if err != nil {
		if failure.IsTransient(err) {
			s.Session.drop()
		}
		return err
	}
	if err := certMatchesCSR(res.CertificatePEM, r.Data.CSRPEM); err != nil {
		return fmt.Errorf("certificate %s from the cloud: %w", res.CertificateID, err)
	}
	r.Data.CertificateID = res.CertificateID
	r.Data.CertificatePEM = res.CertificatePEM
	r.Data.OwnershipToken = res.OwnershipToken
	r.Data.TokenIssuedAt = r.Now()
	// The client logs the answer; one record per event.
	return nil
}

// checkPrior makes sure a certificate given up on while its registration
// may have gone through (engine.Data.PriorCertificateID) is not ACTIVE
// before another is asked for. RegisterThing is what activates a
// certificate and the fleet provisioning API cannot be asked about one,
// so the device presents it in a TLS handshake, which AWS IoT completes
// only for an ACTIVE certificate.
func (s *CreateCertificate) checkPrior(ctx context.Context, r *engine.Run) error {
	id := r.Data.PriorCertificateID
	if r.Data.PriorCertificatePEM == "" {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, r.Config.ConnectTimeout)
	defer cancel()
	active, err := s.Session.probe(pctx, r, r.Data.PriorCertificatePEM)
	switch {
	case errors.Is(err, errKeyReplaced):
		// Only a create-keys run replaces the key, and only after a
		// check of this same certificate found it not ACTIVE, a run
		// killed before journaling so. Its token is spent, so nothing
		// can have activated it since.
		r.Log.Info("prior certificate's key was replaced after it was found not active", "certificateId", id)
	case err != nil:
		return fmt.Errorf("checking whether certificate %s, given up on after its registration went unanswered, is active: %w", id, err)
	case active:
		return fmt.Errorf("certificate %s %w; deactivate it (aws iot update-certificate --certificate-id %s --new-status INACTIVE, or fleetprov cloud update-certificate on the local cloud), then run again", id, ErrPriorCertificateActive, id)
	default:
		r.Log.Info("prior certificate is not active: asking for another", "certificateId", id)
	}
	r.Data.PriorCertificateID, r.Data.PriorCertificatePEM = "", ""
	return nil
}

// createKeys runs CreateKeysAndCertificate and stores the key the cloud
// made through the key store, before the certificate is journaled: a
// journaled certificate always has its key on disk.
func (s *CreateCertificate) createKeys(ctx context.Context, r *engine.Run) error {
	c, err := s.Session.get(ctx, r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.Config.RequestTimeout)
	defer cancel()
	res, err := c.CreateKeysAndCertificate(ctx)
	if err != nil {
		if failure.IsTransient(err) {
			s.Session.drop()
		}
		return err
	}
	key, err := keystore.ParsePrivateKeyPEM([]byte(res.PrivateKeyPEM), "privateKey from the cloud")
	if err != nil {
		return err
	}
	cert, err := parseCertPEM(res.CertificatePEM)
	if err != nil {
		return fmt.Errorf("certificate %s from the cloud: %w", res.CertificateID, err)
	}
	if !reflect.DeepEqual(cert.PublicKey, key.Public()) {
		return fmt.Errorf("certificate %s from the cloud is not for the private key sent with it", res.CertificateID)
	}
	uri := r.Config.KeyURI
	ks, err := keystore.Open(uri)
	if err != nil {
		return err
	}
	defer ks.Close()
	imp, ok := ks.(keystore.KeyImporter)
	if !ok {
		return fmt.Errorf("key store for %s cannot store a key made elsewhere: use certificateMode csr", uri)
	}
	owner, err := fileOwner(r.Config)
	if err != nil {
		return err
	}
	if err := imp.ImportKey(ctx, &keystore.ImportKeyRequest{URI: uri, PrivateKey: key, Owner: owner}); err != nil {
		return fmt.Errorf("store the key from the cloud: %w", err)
	}
	r.Data.KeyURI = uri
	r.Data.CertificateID = res.CertificateID
	r.Data.CertificatePEM = res.CertificatePEM
	r.Data.OwnershipToken = res.OwnershipToken
	r.Data.TokenIssuedAt = r.Now()
	// The client logs the answer; this says where the key went.
	r.Log.Info("device key stored", "key", uri)
	return nil
}

func parseCertPEM(certPEM string) (*x509.Certificate, error) {
	cb, _ := pem.Decode([]byte(certPEM))
	if cb == nil {
		return nil, errors.New("certificatePem is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificatePem: %w", err)
	}
	return cert, nil
}

// certMatchesCSR checks the certificate is for our key: a certificate for
// another key would be useless, and writing it would break the device.
func certMatchesCSR(certPEM, csrPEM string) error {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return err
	}
	rb, _ := pem.Decode([]byte(csrPEM))
	if rb == nil {
		return errors.New("journaled CSR is not PEM")
	}
	csr, err := x509.ParseCertificateRequest(rb.Bytes)
	if err != nil {
		return fmt.Errorf("journaled CSR: %w", err)
	}
	if !reflect.DeepEqual(cert.PublicKey, csr.PublicKey) {
		return errors.New("its public key is not the device key's")
	}
	return nil
}
