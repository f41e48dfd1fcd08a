package states

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"reflect"

	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/failure"
)

// CreateCertificate sends the CSR with CreateCertificateFromCsr over the
// claim connection and keeps the certificate and its ownership token.
type CreateCertificate struct{ Session *Session }

var _ engine.State = (*CreateCertificate)(nil)

func (*CreateCertificate) Name() string { return engine.CreateCertificate }

func (s *CreateCertificate) Run(ctx context.Context, r *engine.Run) error {
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
	r.Log.Info("certificate issued", "certificateId", res.CertificateID)
	return nil
}

// certMatchesCSR checks the certificate is for our key: a certificate for
// another key would be useless, and writing it would break the device.
func certMatchesCSR(certPEM, csrPEM string) error {
	cb, _ := pem.Decode([]byte(certPEM))
	if cb == nil {
		return errors.New("certificatePem is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return fmt.Errorf("certificatePem: %w", err)
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
