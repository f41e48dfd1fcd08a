// Package keystore is where device private keys live. The engine asks a
// KeyStore to create a key and to sign with it; the private key itself never
// leaves the store. Keys are named by URI and the scheme picks the backend
// ("file:/var/lib/greengrass/credentials/priv_key"); backends register
// themselves by scheme.
package keystore

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// Algorithm names a key type and size, as written in config (keyAlgorithm).
type Algorithm string

const (
	ECDSAP256 Algorithm = "ecdsa-p256"
	ECDSAP384 Algorithm = "ecdsa-p384"
	RSA2048   Algorithm = "rsa-2048"
	RSA3072   Algorithm = "rsa-3072"
)

// CreateKeyRequest asks for a new key at URI.
type CreateKeyRequest struct {
	URI       string
	Algorithm Algorithm
	// Owner, when set, is applied to files a backend writes (file backend).
	Owner *Owner
}

// Owner is a numeric file owner.
type Owner struct{ UID, GID int }

// CreateKeyResponse describes the key created.
type CreateKeyResponse struct {
	URI       string
	PublicKey crypto.PublicKey
}

// GetPublicKeyRequest names an existing key.
type GetPublicKeyRequest struct{ URI string }

// CreateSignerRequest names the key a signer is wanted for.
type CreateSignerRequest struct{ URI string }

// KeyStore is the small core every backend implements.
type KeyStore interface {
	CreateKey(ctx context.Context, req *CreateKeyRequest) (*CreateKeyResponse, error)
	GetPublicKey(ctx context.Context, req *GetPublicKeyRequest) (crypto.PublicKey, error)
	CreateSigner(ctx context.Context, req *CreateSignerRequest) (crypto.Signer, error)
	Close() error
}

// ImportKeyRequest stores a private key made elsewhere (the create-keys
// certificate mode, where the cloud generates the key).
type ImportKeyRequest struct {
	URI        string
	PrivateKey crypto.PrivateKey
	Owner      *Owner
}

// KeyImporter is an optional ability: a store that can take a key made
// elsewhere. Hardware stores usually cannot.
type KeyImporter interface {
	ImportKey(ctx context.Context, req *ImportKeyRequest) error
}

// DeleteKeyRequest names a key to remove.
type DeleteKeyRequest struct{ URI string }

// KeyDeleter is an optional ability: a store that can remove a key (a
// forced re-provisioning that must not leave the old key behind).
// Deleting a key that does not exist is not an error.
type KeyDeleter interface {
	DeleteKey(ctx context.Context, req *DeleteKeyRequest) error
}

// StoreCertificateRequest hands a store the certificate issued for the key
// at URI.
type StoreCertificateRequest struct {
	URI         string
	Certificate *x509.Certificate
}

// CertificateStorer is an optional ability: a store that keeps the
// device certificate next to its key (a secure element with a certificate
// slot). The certificate is still written where the config says.
type CertificateStorer interface {
	StoreCertificate(ctx context.Context, req *StoreCertificateRequest) error
}

// URIChecker is an optional ability: a store that can tell a malformed URI
// of its scheme without touching a key or a device, so that a bad key URI
// in config is refused before a run starts.
type URIChecker interface {
	CheckURI(uri string) error
}

// URIResolver is an optional ability: a store whose URIs may leave the
// key's place to the store (tpm: without a handle: the TPM store's own key,
// or the first free handle) says where the key is, or will be made. The
// answer names the same key for good, so it is what a run journals and
// writes into config. A URI that already says where gives itself back.
type URIResolver interface {
	ResolveURI(ctx context.Context, uri string) (string, error)
}

// ErrKeyNotFound is returned (wrapped) when a URI names no existing key.
var ErrKeyNotFound = errors.New("key not found")

// ErrKeyExists is returned (wrapped) by CreateKey of a store that will not
// replace a key it already holds under that URI (a hardware token). A run
// that finds one when resuming reuses it through GetPublicKey and
// CreateSigner instead.
var ErrKeyExists = errors.New("key already exists")

// Opener creates a backend for a URI of its scheme.
type Opener func(uri *url.URL) (KeyStore, error)

var (
	mu       sync.RWMutex
	backends = map[string]Opener{}
)

// Register makes a backend available under scheme. Backends call it from
// init; registering a scheme twice is a programming error.
func Register(scheme string, open Opener) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := backends[scheme]; dup {
		panic("keystore: scheme registered twice: " + scheme)
	}
	backends[scheme] = open
}

// Open returns the backend for uri's scheme.
func Open(uri string) (KeyStore, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	mu.RLock()
	open, ok := backends[u.Scheme]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("key URI %q: unknown scheme %q (known: %s)", uri, u.Scheme, strings.Join(Schemes(), ", "))
	}
	return open(u)
}

// Schemes lists the registered schemes, sorted.
func Schemes() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(backends))
	for s := range backends {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// ParseURI parses a key URI and checks it has a scheme.
func ParseURI(uri string) (*url.URL, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("key URI %q: %w", uri, err)
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("key URI %q has no scheme: write it as file:/path/to/key", uri)
	}
	return u, nil
}

// FileURI is the URI of a key held in a PEM file at path. The characters
// a URI gives a meaning (%, # and ?) are escaped, so that a path holding
// them names the same file once parsed; any other path reads as itself.
func FileURI(path string) string { return "file:" + fileURIEscaper.Replace(path) }

var fileURIEscaper = strings.NewReplacer("%", "%25", "#", "%23", "?", "%3F")
