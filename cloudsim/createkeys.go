package cloudsim

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
)

// createKeysAccepted is the CreateKeysAndCertificate answer, keys as in the
// AWS developer guide.
type createKeysAccepted struct {
	CertificateID  string `json:"certificateId"`
	CertificatePEM string `json:"certificatePem"`
	PrivateKey     string `json:"privateKey"`
	Token          string `json:"certificateOwnershipToken"`
}

// createKeysSubject is the subject AWS IoT puts on the certificates it
// makes with their keys.
var createKeysSubject = pkix.Name{CommonName: "AWS IoT Certificate"}

// createKeysAndCertificate makes an RSA-2048 key and a certificate for it,
// as AWS does. The certificate starts PENDING_ACTIVATION with an ownership
// token, exactly as in the CSR flow, so RegisterThing cannot tell them
// apart.
func (s *Server) createKeysAndCertificate(log *slog.Logger, c codec, payload []byte) (any, *Rejection) {
	if err := decodeEmptyRequest(c, payload); err != nil {
		return nil, reject(400, CodeInvalidPayload, "Invalid request payload: %v", err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, reject(500, CodeInternalFailure, "Internal failure: generate key: %v", err)
	}
	pc, rej := s.issuePending(key.Public(), createKeysSubject, func(err error) *Rejection {
		return reject(500, CodeInternalFailure, "Internal failure: %v", err)
	})
	if rej != nil {
		return nil, rej
	}
	log.Info("keys and certificate created", "newCertificateId", pc.id)
	// PKCS#1 "RSA PRIVATE KEY", the encoding AWS returns and the AWS SDK
	// samples write to disk unchanged.
	keyText := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	return createKeysAccepted{CertificateID: pc.id, CertificatePEM: pc.pem, PrivateKey: keyText, Token: pc.token}, nil
}
