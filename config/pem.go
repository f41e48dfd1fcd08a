package config

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
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

// maxInputPEM bounds the claim key, claim certificate and root CA files:
// a CA bundle is a few hundred KB; anything larger is not what the key
// names, and a device such as /dev/zero would never end.
const maxInputPEM = 1 << 20

// inputProblem is why an input file cannot be used, as a message says it.
type inputProblem string

func (p inputProblem) Error() string { return string(p) }

// readInputPEM reads one of the PEM files a run needs. It refuses what
// is not a regular file (a FIFO would block the read for ever, a device
// would be read without end) and a file over maxInputPEM.
func readInputPEM(path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, &fs.PathError{Op: "read", Path: path, Err: syscall.EISDIR}
	}
	if !fi.Mode().IsRegular() {
		return nil, inputProblem("is " + kindOf(fi) + ", not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxInputPEM+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxInputPEM {
		clear(b)
		return nil, inputProblem(fmt.Sprintf("is larger than %d KiB, too large for a PEM file", maxInputPEM>>10))
	}
	return b, nil
}
