// Package tpm keeps device and claim keys in a TPM 2.0. A key is made inside
// the TPM under the owner hierarchy's storage key, persisted at a handle with
// TPM2_EvictControl, and every signature is made there; the private key never
// leaves the TPM. Keys are named by Greengrass nucleus lite's own form,
// handle:0x81000002, or by fleetprov's, tpm:handle=0x81000002?... (see URI).
//
// The package is pure Go (google/go-tpm), but it is linked into fleetprov
// only when built with -tags tpm, or by a program that calls Register.
package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/fleetprov/fleetprov/plugins/keystore"
)

var registerOnce sync.Once

// Register makes handle: and tpm: key URIs usable through keystore.Open.
// Calling it more than once is harmless.
func Register() {
	registerOnce.Do(func() {
		open := func(*url.URL) (keystore.KeyStore, error) { return New(), nil }
		keystore.Register(SchemeHandle, open)
		keystore.Register(Scheme, open)
	})
}

// srkHandle is where a TPM's storage root key is persisted by convention
// (TCG TPM v2.0 Provisioning Guidance). When one is there, new keys are
// made under it; otherwise under the same key made afresh from the
// standard template, which the TPM derives from its seed each time.
const srkHandle = 0x81000001

// ownerMark is the authPolicy of every key fleetprov creates: how it tells
// its own keys from others in the TPM, so that it replaces or evicts only
// those. It is the digest of a fixed text, not of a policy, so no policy
// session can ever satisfy it: it grants nothing. tpm2_readpublic shows it
// as the key's authorization policy.
var ownerMark = sha256.Sum256([]byte("fleetprov: key created by fleetprov\n"))

// Store is a keystore.KeyStore over TPM 2.0 persistent keys. It holds no
// connection: each operation opens the TPM and closes it.
type Store struct{}

var (
	_ keystore.KeyStore    = (*Store)(nil)
	_ keystore.KeyDeleter  = (*Store)(nil)
	_ keystore.URIChecker  = (*Store)(nil)
	_ keystore.URIResolver = (*Store)(nil)
)

// New returns a Store.
func New() *Store { return &Store{} }

// Errors are fatal (failure.IsTransient is false for them): a missing
// device, a full TPM or a wrong password does not get better by retrying.

// session is one open TPM and the key URI an operation is about.
type session struct {
	u      *URI
	device string
	tpm    transport.TPMCloser
	// picked: the URI was tpm: alone, and the handle is the one it
	// settled on.
	picked bool
}

func open(uri string) (*session, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	d, err := u.device()
	if err != nil {
		return nil, err
	}
	t, err := openTPM(d)
	if err != nil {
		return nil, err
	}
	s := &session{u: u, device: d, tpm: t}
	if u.Handle == 0 {
		s.picked = true
		if err := s.pickHandle(); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// The handles tpm: without handle= picks from: the owner's persistent
// range, less 0x81000000 and 0x81000001 (where a TPM's storage root key
// is kept by convention, and where Greengrass lite's guide puts its claim
// key) and the endorsement keys' range (TCG's registry of reserved
// handles).
const (
	pickFirst      = 0x81000002
	endorsementLo  = 0x81010000
	endorsementHi  = 0x8101FFFF
	maxHandlesRead = 64
)

// pickHandle settles where tpm: without a handle is: the lowest handle
// holding a key fleetprov made, or else the first free one.
func (s *session) pickHandle() error {
	used, err := s.persistentHandles()
	if err != nil {
		return err
	}
	inUse := map[uint32]bool{}
	for _, h := range used {
		inUse[h] = true
		if h < persistentFirst || h > persistentOwnerLast {
			continue
		}
		if pub, _, err := s.readPublic(h); err == nil && owned(pub) {
			s.u.Handle = h
			return nil
		}
	}
	for h := uint32(pickFirst); h <= persistentOwnerLast; h++ {
		if h == endorsementLo {
			h = endorsementHi
			continue
		}
		if !inUse[h] {
			s.u.Handle = h
			return nil
		}
	}
	return fmt.Errorf("tpm key in %s: no free persistent handle (NV full): evict a key no longer used (tpm2_getcap handles-persistent lists them; tpm2_evictcontrol -C o -c HANDLE evicts one)", s.device)
}

// persistentHandles lists the handles in use in the persistent range,
// lowest first, as the TPM gives them.
func (s *session) persistentHandles() ([]uint32, error) {
	var out []uint32
	next := uint32(persistentFirst)
	for {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: next, PropertyCount: maxHandlesRead}.Execute(s.tpm)
		if err != nil {
			return nil, fmt.Errorf("tpm in %s: list persistent handles: %w", s.device, err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, fmt.Errorf("tpm in %s: list persistent handles: %w", s.device, err)
		}
		for _, h := range hs.Handle {
			if uint32(h) > persistentLast {
				return out, nil
			}
			out = append(out, uint32(h))
			next = uint32(h) + 1
		}
		if !rsp.MoreData || len(hs.Handle) == 0 {
			return out, nil
		}
	}
}

func (s *session) Close() error { return s.tpm.Close() }

// describe names the key for messages.
func (s *session) describe() string {
	if s.picked {
		return fmt.Sprintf("tpm key 0x%08x (tpm: settles on it) in %s", s.u.Handle, s.device)
	}
	return fmt.Sprintf("tpm key 0x%08x in %s", s.u.Handle, s.device)
}

// readPublic reads the public area at a persistent handle; a handle
// holding nothing gives keystore.ErrKeyNotFound.
func (s *session) readPublic(h uint32) (*tpm2.TPMTPublic, tpm2.TPM2BName, error) {
	rsp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(h)}.Execute(s.tpm)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, tpm2.TPM2BName{}, keystore.ErrKeyNotFound
		}
		return nil, tpm2.TPM2BName{}, s.tpmError("read the public key", err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, tpm2.TPM2BName{}, fmt.Errorf("%s: %w", s.describe(), err)
	}
	return pub, rsp.Name, nil
}

// tpmError turns the TPM's answers a user can act on into one line that
// says what to do.
func (s *session) tpmError(op string, err error) error {
	switch {
	case errors.Is(err, tpm2.TPMRCNVSpace):
		return fmt.Errorf("%s: %s: the TPM has no room for another persistent key (NV full): evict one no longer used (tpm2_getcap handles-persistent lists them; tpm2_evictcontrol -C o -c HANDLE evicts one)", s.describe(), op)
	case errors.Is(err, tpm2.TPMRCLockout):
		return fmt.Errorf("%s: %s: the TPM is in dictionary-attack lockout after too many wrong passwords: wait for it to recover, or reset it with the lockout password (tpm2_dictionarylockout -c)", s.describe(), op)
	}
	return fmt.Errorf("%s: %s: %w", s.describe(), op, err)
}

// ownerError explains a refused owner authorization: fleetprov uses the
// owner hierarchy with an empty password, as tpm2-tools does by default.
func (s *session) ownerError(op string, err error) error {
	if errors.Is(err, tpm2.TPMRCAuthFail) || errors.Is(err, tpm2.TPMRCBadAuth) {
		return fmt.Errorf("%s: %s: the TPM refused the owner hierarchy's empty password (wrong auth): fleetprov needs the owner password empty to create keys; clear it (tpm2_changeauth -c o -p OLD) or create the key yourself and name it with handle:0x...", s.describe(), op)
	}
	return s.tpmError(op, err)
}

// keyError explains a refused key authorization.
func (s *session) keyError(op string, err error) error {
	if errors.Is(err, tpm2.TPMRCAuthFail) || errors.Is(err, tpm2.TPMRCBadAuth) {
		src := "an empty password"
		if s.u.AuthSource != "" {
			src = "the password from " + s.u.AuthSource
		}
		return fmt.Errorf("%s: %s: the TPM refused %s (wrong auth): give the key's password with auth-source=file:/path in a tpm:handle=0x%08x key URI", s.describe(), op, src, s.u.Handle)
	}
	return s.tpmError(op, err)
}

func owned(pub *tpm2.TPMTPublic) bool {
	return bytes.Equal(pub.AuthPolicy.Buffer, ownerMark[:])
}

// CreateKey makes a key in the TPM and persists it at the URI's handle.
//
// A handle holding a key fleetprov made is replaced (tpm:) or used as it
// is (handle:); a handle holding any other key is never touched: handle:
// uses that key as Greengrass lite would, and tpm: refuses with a message
// naming the handle.
func (st *Store) CreateKey(ctx context.Context, req *keystore.CreateKeyRequest) (*keystore.CreateKeyResponse, error) {
	tmpl, err := keyTemplate(req.Algorithm)
	if err != nil {
		return nil, err
	}
	s, err := open(req.URI)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	h := s.u.Handle
	if h > persistentOwnerLast {
		return nil, fmt.Errorf("%s: 0x%08x is in the platform's half of the persistent range, where the owner cannot persist keys: name a handle from 0x81000000 to 0x817fffff", s.describe(), h)
	}
	old, _, err := s.readPublic(h)
	switch {
	case errors.Is(err, keystore.ErrKeyNotFound):
	case err != nil:
		return nil, err
	case s.u.Greengrass:
		// handle: names a key to use: whoever made it, it stays.
		pub, err := tpm2.Pub(*old)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.describe(), err)
		}
		return &keystore.CreateKeyResponse{URI: req.URI, PublicKey: pub}, nil
	case !owned(old):
		return nil, fmt.Errorf("%s: the handle holds a key fleetprov did not create, and fleetprov never evicts such a key: name a free handle in the key URI (tpm2_getcap handles-persistent lists those in use), or use that key with handle:0x%08x", s.describe(), h)
	default:
		if err := s.evict(h); err != nil {
			return nil, err
		}
	}

	auth, err := s.u.authValue()
	if err != nil {
		return nil, err
	}
	parent, flush, err := s.storageKey()
	if err != nil {
		return nil, err
	}
	defer flush()
	created, err := tpm2.Create{
		ParentHandle: parent,
		InSensitive:  tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{UserAuth: tpm2.TPM2BAuth{Buffer: auth}}},
		InPublic:     tpm2.New2B(tmpl),
	}.Execute(s.tpm)
	if err != nil {
		return nil, s.tpmError(fmt.Sprintf("create %s key", req.Algorithm), err)
	}
	loaded, err := tpm2.Load{ParentHandle: parent, InPrivate: created.OutPrivate, InPublic: created.OutPublic}.Execute(s.tpm)
	if err != nil {
		return nil, s.tpmError("load the new key", err)
	}
	defer tpm2.FlushContext{FlushHandle: loaded.ObjectHandle}.Execute(s.tpm) //nolint:errcheck // best effort: the resource manager flushes it anyway
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: loaded.ObjectHandle, Name: loaded.Name},
		PersistentHandle: tpm2.TPMHandle(h),
	}).Execute(s.tpm); err != nil {
		return nil, s.ownerError("persist the new key", err)
	}
	outPub, err := created.OutPublic.Contents()
	if err != nil {
		return nil, err
	}
	pub, err := tpm2.Pub(*outPub)
	if err != nil {
		return nil, err
	}
	return &keystore.CreateKeyResponse{URI: req.URI, PublicKey: pub}, nil
}

// storageKey is the parent for new keys: the persistent SRK when the TPM
// has one, else the standard ECC SRK made afresh (and flushed by flush).
func (s *session) storageKey() (tpm2.AuthHandle, func(), error) {
	if pub, name, err := s.readPublic(srkHandle); err == nil && pub.ObjectAttributes.Restricted && pub.ObjectAttributes.Decrypt && pub.ObjectAttributes.FixedTPM {
		return tpm2.AuthHandle{Handle: srkHandle, Name: name, Auth: tpm2.PasswordAuth(nil)}, func() {}, nil
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(s.tpm)
	if err != nil {
		return tpm2.AuthHandle{}, nil, s.ownerError("create the storage key", err)
	}
	flush := func() { _, _ = tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(s.tpm) }
	return tpm2.AuthHandle{Handle: rsp.ObjectHandle, Name: rsp.Name, Auth: tpm2.PasswordAuth(nil)}, flush, nil
}

func (s *session) evict(h uint32) error {
	_, name, err := s.readPublic(h)
	if err != nil {
		return err
	}
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: tpm2.TPMHandle(h), Name: name},
		PersistentHandle: tpm2.TPMHandle(h),
	}.Execute(s.tpm)
	if err != nil {
		return s.ownerError("evict the key", err)
	}
	return nil
}

// keyTemplate is the public area of a new signing key: bound to this TPM
// and its parent, made inside it, usable with its password, for signing
// only, any scheme and hash chosen at each signature (TLS asks for several).
func keyTemplate(alg keystore.Algorithm) (tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		SignEncrypt:         true,
	}
	t := tpm2.TPMTPublic{NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs, AuthPolicy: tpm2.TPM2BDigest{Buffer: ownerMark[:]}}
	switch alg {
	case keystore.ECDSAP256, keystore.ECDSAP384, "":
		curve := tpm2.TPMECCNistP256
		if alg == keystore.ECDSAP384 {
			curve = tpm2.TPMECCNistP384
		}
		t.Type = tpm2.TPMAlgECC
		t.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID:   curve,
			KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		})
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	case keystore.RSA2048, keystore.RSA3072:
		bits := tpm2.TPMKeyBits(2048)
		if alg == keystore.RSA3072 {
			bits = 3072
		}
		t.Type = tpm2.TPMAlgRSA
		t.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
			KeyBits:   bits,
		})
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
	default:
		return t, fmt.Errorf("key algorithm %q is not supported: use ecdsa-p256, ecdsa-p384, rsa-2048 or rsa-3072", alg)
	}
	return t, nil
}

// GetPublicKey returns the public half of the key at the URI's handle; a
// free handle gives an error wrapping keystore.ErrKeyNotFound.
func (st *Store) GetPublicKey(ctx context.Context, req *keystore.GetPublicKeyRequest) (crypto.PublicKey, error) {
	s, err := open(req.URI)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	pub, _, err := s.readPublic(s.u.Handle)
	if err != nil {
		if errors.Is(err, keystore.ErrKeyNotFound) {
			return nil, fmt.Errorf("%s: %w", s.describe(), err)
		}
		return nil, err
	}
	k, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.describe(), err)
	}
	return k, nil
}

// CreateSigner returns a crypto.Signer whose signatures the TPM makes. It
// serves x509.CreateCertificateRequest and, as tls.Certificate.PrivateKey,
// TLS client authentication: ECDSA (ASN.1), RSA PKCS #1 v1.5 and PSS.
func (st *Store) CreateSigner(ctx context.Context, req *keystore.CreateSignerRequest) (crypto.Signer, error) {
	s, err := open(req.URI)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	pub, name, err := s.readPublic(s.u.Handle)
	if err != nil {
		if errors.Is(err, keystore.ErrKeyNotFound) {
			return nil, fmt.Errorf("%s: %w", s.describe(), err)
		}
		return nil, err
	}
	a := pub.ObjectAttributes
	if !a.SignEncrypt || a.Restricted {
		return nil, fmt.Errorf("%s is not a key that signs what it is given (sign %v, restricted %v): name an unrestricted signing key", s.describe(), a.SignEncrypt, a.Restricted)
	}
	k, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.describe(), err)
	}
	// The password is read now, so that a missing file is found before
	// the first signature, in the middle of a TLS handshake.
	auth, err := s.u.authValue()
	if err != nil {
		return nil, err
	}
	return &signer{uri: s.u, device: s.device, pub: k, name: name, auth: auth}, nil
}

// DeleteKey evicts the key at the URI's handle, if fleetprov created it. A
// key it did not create is never evicted: DeleteKey refuses. A free handle
// is not an error.
func (st *Store) DeleteKey(ctx context.Context, req *keystore.DeleteKeyRequest) error {
	s, err := open(req.URI)
	if err != nil {
		return err
	}
	defer s.Close()
	pub, _, err := s.readPublic(s.u.Handle)
	if errors.Is(err, keystore.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !owned(pub) {
		return fmt.Errorf("%s: not evicted: fleetprov did not create it; evict it yourself if it is no longer needed (tpm2_evictcontrol -C o -c 0x%08x)", s.describe(), s.u.Handle)
	}
	return s.evict(s.u.Handle)
}

// ResolveURI says where a tpm: key without a handle is, or will be made:
// tpm:handle=0x... with the URI's options. Any other URI gives itself.
func (st *Store) ResolveURI(ctx context.Context, uri string) (string, error) {
	u, err := ParseURI(uri)
	if err != nil || u.Handle != 0 {
		return uri, err
	}
	s, err := open(uri)
	if err != nil {
		return "", err
	}
	defer s.Close()
	return fmt.Sprintf("%s:handle=0x%08x%s", Scheme, s.u.Handle, strings.TrimPrefix(uri, Scheme+":")), nil
}

// CheckURI checks uri's form without opening the TPM.
func (st *Store) CheckURI(uri string) error {
	_, err := ParseURI(uri)
	return err
}

// Close releases nothing: each operation closes the TPM when done.
func (st *Store) Close() error { return nil }

// signer signs with a persistent key, opening the TPM for each signature.
type signer struct {
	uri    *URI
	device string
	pub    crypto.PublicKey
	name   tpm2.TPM2BName
	auth   []byte
}

func (k *signer) Public() crypto.PublicKey { return k.pub }

var hashAlgs = map[crypto.Hash]tpm2.TPMIAlgHash{
	crypto.SHA1:   tpm2.TPMAlgSHA1,
	crypto.SHA256: tpm2.TPMAlgSHA256,
	crypto.SHA384: tpm2.TPMAlgSHA384,
	crypto.SHA512: tpm2.TPMAlgSHA512,
}

func (k *signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	h := opts.HashFunc()
	alg, ok := hashAlgs[h]
	if !ok || len(digest) != h.Size() {
		return nil, fmt.Errorf("tpm key 0x%08x: cannot sign a %d-byte digest with hash %v", k.uri.Handle, len(digest), h)
	}
	var scheme tpm2.TPMAlgID
	switch k.pub.(type) {
	case *ecdsa.PublicKey:
		scheme = tpm2.TPMAlgECDSA
	case *rsa.PublicKey:
		scheme = tpm2.TPMAlgRSASSA
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			// The TPM's PSS salt is as long as the hash (TPM 2.0 Part 1,
			// B.7), which is what TLS 1.3 asks for.
			if pss.SaltLength != rsa.PSSSaltLengthEqualsHash && pss.SaltLength != rsa.PSSSaltLengthAuto && pss.SaltLength != h.Size() {
				return nil, fmt.Errorf("tpm key 0x%08x: a TPM signs PSS with a salt as long as the hash, not %d bytes", k.uri.Handle, pss.SaltLength)
			}
			scheme = tpm2.TPMAlgRSAPSS
		}
	default:
		return nil, fmt.Errorf("tpm key 0x%08x: unsupported key type %T", k.uri.Handle, k.pub)
	}
	s, err := openSession(k.uri, k.device)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	rsp, err := tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(k.uri.Handle), Name: k.name, Auth: tpm2.PasswordAuth(k.auth)},
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme: tpm2.TPMTSigScheme{
			Scheme:  scheme,
			Details: tpm2.NewTPMUSigScheme(scheme, &tpm2.TPMSSchemeHash{HashAlg: alg}),
		},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(s.tpm)
	if err != nil {
		return nil, s.keyError("sign", err)
	}
	switch scheme {
	case tpm2.TPMAlgECDSA:
		sig, err := rsp.Signature.Signature.ECDSA()
		if err != nil {
			return nil, err
		}
		return asn1.Marshal(struct{ R, S *big.Int }{
			new(big.Int).SetBytes(sig.SignatureR.Buffer),
			new(big.Int).SetBytes(sig.SignatureS.Buffer),
		})
	case tpm2.TPMAlgRSAPSS:
		sig, err := rsp.Signature.Signature.RSAPSS()
		if err != nil {
			return nil, err
		}
		return sig.Sig.Buffer, nil
	default:
		sig, err := rsp.Signature.Signature.RSASSA()
		if err != nil {
			return nil, err
		}
		return sig.Sig.Buffer, nil
	}
}

func openSession(u *URI, device string) (*session, error) {
	t, err := openTPM(device)
	if err != nil {
		return nil, err
	}
	return &session{u: u, device: device, tpm: t}, nil
}
