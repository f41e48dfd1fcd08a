package config

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"strings"
)

// parsePrivateKeyPEM finds the private key in PEM data and returns its
// public half, or a short description of what is wrong. The description
// never quotes the data: it may be key material.
func parsePrivateKeyPEM(data []byte) (crypto.PublicKey, string) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, "is not a PEM private key"
		}
		if !strings.HasSuffix(block.Type, "PRIVATE KEY") {
			continue // e.g. "EC PARAMETERS" before the key
		}
		if block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
			return nil, "is an encrypted private key, which fleetprov cannot use"
		}
		var key any
		var err error
		switch block.Type {
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		}
		clear(block.Bytes)
		if err != nil {
			return nil, "holds a " + block.Type + " block that does not parse"
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, "holds a private key of a type fleetprov cannot sign with"
		}
		return s.Public(), ""
	}
}

// isCA says whether c can anchor a chain: a CA by its basic constraints,
// or a self-signed certificate of the kind old roots are (no extensions).
func isCA(c *x509.Certificate) bool {
	if c.BasicConstraintsValid {
		return c.IsCA
	}
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// parseCertsPEM returns every certificate in PEM data that parses.
func parseCertsPEM(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return out
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			out = append(out, c)
		}
	}
}
