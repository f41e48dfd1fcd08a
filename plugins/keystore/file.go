package keystore

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"

	"github.com/fleetprov/fleetprov/atomicfile"
)

func init() { Register("file", openFile) }

// fileStore keeps each key as a PKCS#8 PEM file, mode 0600. It is the
// default store and the one Greengrass nucleus lite uses.
type fileStore struct{}

var (
	_ KeyStore    = fileStore{}
	_ KeyImporter = fileStore{}
)

func openFile(*url.URL) (KeyStore, error) { return fileStore{}, nil }

func filePath(uri string) (string, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return "", err
	}
	if u.Scheme != "file" {
		return "", fmt.Errorf("key URI %q is not a file: URI", uri)
	}
	p := u.Path // unescaped by the parser
	if u.Opaque != "" {
		// file:relative/path: the parser leaves an opaque part escaped.
		if p, err = url.PathUnescape(u.Opaque); err != nil {
			return "", fmt.Errorf("key URI %q: %w", uri, err)
		}
	}
	if p == "" {
		return "", fmt.Errorf("key URI %q names no path", uri)
	}
	return p, nil
}

// NewKey generates a private key of the given algorithm.
func NewKey(alg Algorithm) (crypto.Signer, error) {
	switch alg {
	case ECDSAP256, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, fmt.Errorf("key algorithm %q is not supported: use ecdsa-p256, ecdsa-p384, rsa-2048 or rsa-3072", alg)
}

func (fileStore) CreateKey(_ context.Context, req *CreateKeyRequest) (*CreateKeyResponse, error) {
	path, err := filePath(req.URI)
	if err != nil {
		return nil, err
	}
	key, err := NewKey(req.Algorithm)
	if err != nil {
		return nil, err
	}
	if err := writeKey(path, key, req.Owner); err != nil {
		return nil, err
	}
	return &CreateKeyResponse{URI: req.URI, PublicKey: key.Public()}, nil
}

func (fileStore) ImportKey(_ context.Context, req *ImportKeyRequest) error {
	path, err := filePath(req.URI)
	if err != nil {
		return err
	}
	return writeKey(path, req.PrivateKey, req.Owner)
}

func writeKey(path string, key crypto.PrivateKey, owner *Owner) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode private key for %s: %w", path, err)
	}
	opts := atomicfile.Options{MkdirMode: 0o700}
	if owner != nil {
		opts.Owner = &atomicfile.Owner{UID: owner.UID, GID: owner.GID}
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return atomicfile.WriteFile(path, data, 0o600, opts)
}

func (fileStore) GetPublicKey(_ context.Context, req *GetPublicKeyRequest) (crypto.PublicKey, error) {
	path, err := filePath(req.URI)
	if err != nil {
		return nil, err
	}
	key, err := readKey(path)
	if err != nil {
		return nil, err
	}
	return key.Public(), nil
}

func (fileStore) CreateSigner(_ context.Context, req *CreateSignerRequest) (crypto.Signer, error) {
	path, err := filePath(req.URI)
	if err != nil {
		return nil, err
	}
	return readKey(path)
}

func (fileStore) Close() error { return nil }

// readKey loads a PEM private key: PKCS#8, or the older SEC1 and PKCS#1
// forms that openssl and other tools still write. Errors never include the
// file's content.
func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("key file %s: %w", path, ErrKeyNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	return ParsePrivateKeyPEM(data, path)
}

// ParsePrivateKeyPEM decodes the first private key in data. name only labels
// errors.
func ParsePrivateKeyPEM(data []byte, name string) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%s holds no PEM private key", name)
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: malformed %s block", name, block.Type)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: key type %T cannot sign", name, key)
		}
		return s, nil
	}
}
