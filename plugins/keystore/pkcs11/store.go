//go:build cgo

// Package pkcs11 keeps device keys in a PKCS#11 token (an HSM, a smart card,
// a TPM through its PKCS#11 module, or SoftHSM2): the key is made inside the
// token, marked sensitive and non-extractable, and every signature is made
// there. Keys are named by RFC 7512 pkcs11: URIs (see URI).
//
// The package uses cgo (it loads the token's PKCS#11 library), so it is not
// linked into fleetprov itself: a program that wants it imports it and calls
// Register. Built without cgo, it still compiles, and a pkcs11: URI then
// gets an error saying cgo is needed.
package pkcs11

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/ThalesGroup/crypto11"
	p11 "github.com/miekg/pkcs11"

	"github.com/fleetprov/fleetprov/plugins/keystore"
)

var registerOnce sync.Once

// Register makes pkcs11: key URIs usable through keystore.Open. Calling it
// more than once is harmless.
func Register() {
	registerOnce.Do(func() {
		keystore.Register(Scheme, func(*url.URL) (keystore.KeyStore, error) { return New(), nil })
	})
}

// Store is a keystore.KeyStore over PKCS#11 tokens. It logs in to each
// token (module and token label) once, on first use, and logs out on Close.
type Store struct {
	mu   sync.Mutex
	ctxs map[string]*crypto11.Context
}

var (
	_ keystore.KeyStore   = (*Store)(nil)
	_ keystore.URIChecker = (*Store)(nil)
)

// New returns a Store with no token opened yet.
func New() *Store { return &Store{ctxs: map[string]*crypto11.Context{}} }

// Errors are fatal (failure.IsTransient is false for them): a wrong PIN,
// module or token does not get better by retrying.

// tokenURI is the pkcs11: URI in uri. Served as a plugin, the store is
// asked for plugin:NAME/pkcs11:...: fleetprov's name for "the key
// pkcs11:... of plugin NAME".
func tokenURI(uri string) string {
	if rest, ok := strings.CutPrefix(uri, "plugin:"); ok {
		if _, key, ok := strings.Cut(rest, "/"); ok {
			return key
		}
	}
	return uri
}

// open parses uri and returns the logged-in context of its token.
func (s *Store) open(uri string) (*URI, *crypto11.Context, error) {
	u, err := ParseURI(tokenURI(uri))
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := u.ModulePath + "\x00" + u.Token
	if c := s.ctxs[key]; c != nil {
		return u, c, nil
	}
	if _, err := os.Stat(u.ModulePath); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("pkcs11 module %s does not exist: set module-path to the token's PKCS#11 library (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)", u.ModulePath)
		}
		return nil, nil, fmt.Errorf("pkcs11 module %s: %w", u.ModulePath, err)
	}
	pin, err := u.PIN()
	if err != nil {
		return nil, nil, err
	}
	c, err := crypto11.Configure(&crypto11.Config{Path: u.ModulePath, TokenLabel: u.Token, Pin: pin})
	if err != nil {
		return nil, nil, configureError(u, err)
	}
	s.ctxs[key] = c
	return u, c, nil
}

// configureError turns crypto11's errors into one line that says what to
// fix. crypto11 reports a missing token and an unloadable module only by
// message, so those are matched by text.
func configureError(u *URI, err error) error {
	var pe p11.Error
	msg := err.Error()
	switch {
	case errors.As(err, &pe) && (pe == p11.CKR_PIN_INCORRECT || pe == p11.CKR_PIN_LEN_RANGE):
		return fmt.Errorf("pkcs11 token %q: the PIN from %s is wrong: put the token's user PIN there", u.Token, u.PINSource)
	case errors.As(err, &pe) && pe == p11.CKR_PIN_LOCKED:
		return fmt.Errorf("pkcs11 token %q: the user PIN is locked after too many wrong tries: unlock it with the security officer PIN", u.Token)
	case strings.Contains(msg, "could not find PKCS#11 token"):
		return fmt.Errorf("pkcs11 token %q not found in module %s: initialise it (e.g. softhsm2-util --init-token --free --label %s) or fix token= in the key URI", u.Token, u.ModulePath, u.Token)
	case strings.Contains(msg, "failed to open module"):
		return fmt.Errorf("pkcs11 module %s cannot be loaded as a PKCS#11 library: set module-path to the token's PKCS#11 library", u.ModulePath)
	}
	return fmt.Errorf("pkcs11 token %q in module %s: %w", u.Token, u.ModulePath, err)
}

// describe names a key for messages.
func describe(u *URI) string {
	s := fmt.Sprintf("pkcs11 key object=%q", u.Object)
	if len(u.ID) > 0 {
		s += fmt.Sprintf(" id=%x", u.ID)
	}
	return s + fmt.Sprintf(" in token %q", u.Token)
}

func (s *Store) find(u *URI, c *crypto11.Context) (crypto11.Signer, error) {
	keys, err := c.FindKeyPairs(u.ID, []byte(u.Object))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", describe(u), err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: %w", describe(u), keystore.ErrKeyNotFound)
	}
	if len(keys) > 1 {
		return nil, fmt.Errorf("%s names %d keys: add id= to the key URI to say which", describe(u), len(keys))
	}
	return keys[0], nil
}

// CreateKey makes a key pair inside the token. The private half is
// sensitive and non-extractable, so it never leaves the token. A private
// key already holding the URI's label or id is never replaced: CreateKey
// then returns an error wrapping keystore.ErrKeyExists.
func (s *Store) CreateKey(_ context.Context, req *keystore.CreateKeyRequest) (*keystore.CreateKeyResponse, error) {
	u, c, err := s.open(req.URI)
	if err != nil {
		return nil, err
	}
	for _, q := range []struct {
		id    []byte
		label []byte
	}{{nil, []byte(u.Object)}, {u.ID, nil}} {
		if len(q.id) == 0 && len(q.label) == 0 {
			continue
		}
		found, err := c.FindPrivateKeys(q.id, q.label)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", describe(u), err)
		}
		if len(found) > 0 {
			return nil, fmt.Errorf("%s: %w", describe(u), keystore.ErrKeyExists)
		}
	}
	id := u.ID
	if len(id) == 0 {
		// crypto11 pairs the halves by CKA_ID, so every key gets one.
		id = make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
	}
	pub, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(u.Object))
	if err != nil {
		return nil, err
	}
	priv := pub.Copy()
	priv.AddIfNotPresent([]*p11.Attribute{
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_SIGN, true),
	})
	var key crypto11.Signer
	switch req.Algorithm {
	case keystore.ECDSAP256, "":
		key, err = c.GenerateECDSAKeyPairWithAttributes(pub, priv, elliptic.P256())
	case keystore.ECDSAP384:
		key, err = c.GenerateECDSAKeyPairWithAttributes(pub, priv, elliptic.P384())
	case keystore.RSA2048, keystore.RSA3072:
		bits := 2048
		if req.Algorithm == keystore.RSA3072 {
			bits = 3072
		}
		priv.AddIfNotPresent([]*p11.Attribute{p11.NewAttribute(p11.CKA_DECRYPT, false)})
		pub.AddIfNotPresent([]*p11.Attribute{p11.NewAttribute(p11.CKA_ENCRYPT, false)})
		key, err = c.GenerateRSAKeyPairWithAttributes(pub, priv, bits)
	default:
		return nil, fmt.Errorf("key algorithm %q is not supported: use ecdsa-p256, ecdsa-p384, rsa-2048 or rsa-3072", req.Algorithm)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: generate %s key: %w", describe(u), req.Algorithm, err)
	}
	return &keystore.CreateKeyResponse{URI: req.URI, PublicKey: key.Public()}, nil
}

// GetPublicKey returns the public half of an existing key; a URI naming
// none gives an error wrapping keystore.ErrKeyNotFound.
func (s *Store) GetPublicKey(_ context.Context, req *keystore.GetPublicKeyRequest) (crypto.PublicKey, error) {
	u, c, err := s.open(req.URI)
	if err != nil {
		return nil, err
	}
	k, err := s.find(u, c)
	if err != nil {
		return nil, err
	}
	return k.Public(), nil
}

// CreateSigner returns a crypto.Signer whose signatures the token makes. It
// serves x509.CreateCertificateRequest and, as tls.Certificate.PrivateKey,
// TLS client authentication. It stays usable until the Store is closed.
func (s *Store) CreateSigner(_ context.Context, req *keystore.CreateSignerRequest) (crypto.Signer, error) {
	u, c, err := s.open(req.URI)
	if err != nil {
		return nil, err
	}
	return s.find(u, c)
}

// CheckURI checks uri's form without loading the module or reading the PIN.
func (s *Store) CheckURI(uri string) error {
	_, err := ParseURI(tokenURI(uri))
	return err
}

// Close logs out of every token and unloads their modules.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for k, c := range s.ctxs {
		errs = append(errs, c.Close())
		delete(s.ctxs, k)
	}
	return errors.Join(errs...)
}
