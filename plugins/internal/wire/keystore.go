package wire

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/fleetprov/fleetprov/plugins/internal/abilities"
	"github.com/fleetprov/fleetprov/plugins/internal/pluginpb"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// KeyStorePlugin serves Impl (plugin side) or dispenses a client named
// Name (host side).
type KeyStorePlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl keystore.KeyStore
	Name string
}

var _ plugin.GRPCPlugin = (*KeyStorePlugin)(nil)

func (p *KeyStorePlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginpb.RegisterKeyStoreServer(s, &keyStoreServer{impl: p.Impl})
	return nil
}

func (p *KeyStorePlugin) GRPCClient(ctx context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return NewKeyStoreClient(ctx, p.Name, c)
}

type keyStoreServer struct {
	pluginpb.UnimplementedKeyStoreServer
	impl keystore.KeyStore
}

func (s *keyStoreServer) Abilities(context.Context, *pluginpb.AbilitiesRequest) (*pluginpb.AbilitiesResponse, error) {
	_, imp := s.impl.(keystore.KeyImporter)
	_, del := s.impl.(keystore.KeyDeleter)
	_, crt := s.impl.(keystore.CertificateStorer)
	return &pluginpb.AbilitiesResponse{ImportKey: imp, DeleteKey: del, StoreCertificate: crt}, nil
}

func owner(o *pluginpb.Owner) *keystore.Owner {
	if o == nil {
		return nil
	}
	return &keystore.Owner{UID: int(o.Uid), GID: int(o.Gid)}
}

func ownerPB(o *keystore.Owner) *pluginpb.Owner {
	if o == nil {
		return nil
	}
	return &pluginpb.Owner{Uid: int64(o.UID), Gid: int64(o.GID)}
}

func (s *keyStoreServer) CreateKey(ctx context.Context, req *pluginpb.CreateKeyRequest) (*pluginpb.CreateKeyResponse, error) {
	res, err := s.impl.CreateKey(ctx, &keystore.CreateKeyRequest{URI: req.Uri, Algorithm: keystore.Algorithm(req.Algorithm), Owner: owner(req.Owner)})
	if err != nil {
		return nil, toStatus(err)
	}
	der, err := x509.MarshalPKIXPublicKey(res.PublicKey)
	if err != nil {
		return nil, toStatus(fmt.Errorf("encode public key of %s: %w", req.Uri, err))
	}
	return &pluginpb.CreateKeyResponse{Uri: res.URI, PublicKey: der}, nil
}

func (s *keyStoreServer) GetPublicKey(ctx context.Context, req *pluginpb.GetPublicKeyRequest) (*pluginpb.GetPublicKeyResponse, error) {
	pub, err := s.impl.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: req.Uri})
	if err != nil {
		return nil, toStatus(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, toStatus(fmt.Errorf("encode public key of %s: %w", req.Uri, err))
	}
	return &pluginpb.GetPublicKeyResponse{PublicKey: der}, nil
}

func (s *keyStoreServer) Sign(ctx context.Context, req *pluginpb.SignRequest) (*pluginpb.SignResponse, error) {
	signer, err := s.impl.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: req.Uri})
	if err != nil {
		return nil, toStatus(err)
	}
	var opts crypto.SignerOpts = crypto.Hash(req.Hash)
	if req.Pss {
		opts = &rsa.PSSOptions{SaltLength: int(req.SaltLength), Hash: crypto.Hash(req.Hash)}
	}
	sig, err := signer.Sign(rand.Reader, req.Digest, opts)
	if err != nil {
		return nil, toStatus(fmt.Errorf("sign with %s: %w", req.Uri, err))
	}
	return &pluginpb.SignResponse{Signature: sig}, nil
}

func (s *keyStoreServer) ImportKey(ctx context.Context, req *pluginpb.ImportKeyRequest) (*pluginpb.ImportKeyResponse, error) {
	imp, ok := s.impl.(keystore.KeyImporter)
	if !ok {
		return nil, toStatus(fmt.Errorf("this key store cannot import keys: %w", errors.ErrUnsupported))
	}
	key, err := x509.ParsePKCS8PrivateKey(req.PrivateKey)
	if err != nil {
		return nil, toStatus(fmt.Errorf("import %s: the private key is not PKCS #8 DER", req.Uri))
	}
	return &pluginpb.ImportKeyResponse{}, toStatus(imp.ImportKey(ctx, &keystore.ImportKeyRequest{URI: req.Uri, PrivateKey: key, Owner: owner(req.Owner)}))
}

func (s *keyStoreServer) DeleteKey(ctx context.Context, req *pluginpb.DeleteKeyRequest) (*pluginpb.DeleteKeyResponse, error) {
	del, ok := s.impl.(keystore.KeyDeleter)
	if !ok {
		return nil, toStatus(fmt.Errorf("this key store cannot delete keys: %w", errors.ErrUnsupported))
	}
	return &pluginpb.DeleteKeyResponse{}, toStatus(del.DeleteKey(ctx, &keystore.DeleteKeyRequest{URI: req.Uri}))
}

func (s *keyStoreServer) StoreCertificate(ctx context.Context, req *pluginpb.StoreCertificateRequest) (*pluginpb.StoreCertificateResponse, error) {
	st, ok := s.impl.(keystore.CertificateStorer)
	if !ok {
		return nil, toStatus(fmt.Errorf("this key store cannot store certificates: %w", errors.ErrUnsupported))
	}
	cert, err := x509.ParseCertificate(req.Certificate)
	if err != nil {
		return nil, toStatus(fmt.Errorf("store certificate for %s: not a DER certificate: %w", req.Uri, err))
	}
	return &pluginpb.StoreCertificateResponse{}, toStatus(st.StoreCertificate(ctx, &keystore.StoreCertificateRequest{URI: req.Uri, Certificate: cert}))
}

// keyStoreClient is the host's view of a plugin's key store. Its optional
// abilities are offered only when the plugin has them (see
// NewKeyStoreClient).
type keyStoreClient struct {
	name string
	c    pluginpb.KeyStoreClient
}

var _ keystore.KeyStore = (*keyStoreClient)(nil)

// NewKeyStoreClient asks the plugin which optional abilities it has and
// returns a KeyStore that implements exactly those, so a type assertion on
// the host finds an ability absent rather than failing at the call.
func NewKeyStoreClient(ctx context.Context, name string, conn grpc.ClientConnInterface) (keystore.KeyStore, error) {
	c := &keyStoreClient{name: name, c: pluginpb.NewKeyStoreClient(conn)}
	ab, err := c.c.Abilities(ctx, &pluginpb.AbilitiesRequest{})
	if err != nil {
		return nil, fromStatus(name, "Abilities", err)
	}
	return abilities.KeyStore(c, ab.ImportKey, ab.DeleteKey, ab.StoreCertificate), nil
}

func (c *keyStoreClient) CreateKey(ctx context.Context, req *keystore.CreateKeyRequest) (*keystore.CreateKeyResponse, error) {
	res, err := c.c.CreateKey(ctx, &pluginpb.CreateKeyRequest{Uri: req.URI, Algorithm: string(req.Algorithm), Owner: ownerPB(req.Owner)})
	if err != nil {
		return nil, fromStatus(c.name, "CreateKey", err)
	}
	pub, err := c.parsePublic(res.PublicKey, "CreateKey")
	if err != nil {
		return nil, err
	}
	uri := res.Uri
	if uri == "" {
		uri = req.URI
	}
	return &keystore.CreateKeyResponse{URI: uri, PublicKey: pub}, nil
}

func (c *keyStoreClient) parsePublic(der []byte, call string) (crypto.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %s: answered with a public key that is not PKIX DER: %w", c.name, call, err)
	}
	return pub, nil
}

func (c *keyStoreClient) GetPublicKey(ctx context.Context, req *keystore.GetPublicKeyRequest) (crypto.PublicKey, error) {
	res, err := c.c.GetPublicKey(ctx, &pluginpb.GetPublicKeyRequest{Uri: req.URI})
	if err != nil {
		return nil, fromStatus(c.name, "GetPublicKey", err)
	}
	return c.parsePublic(res.PublicKey, "GetPublicKey")
}

// CreateSigner checks that the key exists and learns its public key; each
// Sign is then one call to the plugin, which keeps the private key.
func (c *keyStoreClient) CreateSigner(ctx context.Context, req *keystore.CreateSignerRequest) (crypto.Signer, error) {
	pub, err := c.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: req.URI})
	if err != nil {
		return nil, err
	}
	return &remoteSigner{c: c, uri: req.URI, pub: pub}, nil
}

// Close releases nothing: the plugin process belongs to the host, which
// stops it when the run ends.
func (c *keyStoreClient) Close() error { return nil }

type remoteSigner struct {
	c   *keyStoreClient
	uri string
	pub crypto.PublicKey
}

func (s *remoteSigner) Public() crypto.PublicKey { return s.pub }

// Sign sends the digest and the signing options; the random source is the
// plugin's own. crypto.Signer carries no context, so the host's per-call
// timeout is what bounds it.
func (s *remoteSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	req := &pluginpb.SignRequest{Uri: s.uri, Digest: digest, Hash: uint32(opts.HashFunc())}
	if pss, ok := opts.(*rsa.PSSOptions); ok {
		req.Pss = true
		req.SaltLength = int32(pss.SaltLength)
	}
	res, err := s.c.c.Sign(context.Background(), req)
	if err != nil {
		return nil, fromStatus(s.c.name, "Sign", err)
	}
	return res.Signature, nil
}

func (c *keyStoreClient) ImportKey(ctx context.Context, req *keystore.ImportKeyRequest) error {
	der, err := x509.MarshalPKCS8PrivateKey(req.PrivateKey)
	if err != nil {
		return fmt.Errorf("plugin %s: ImportKey %s: encode the private key: %w", c.name, req.URI, err)
	}
	_, err = c.c.ImportKey(ctx, &pluginpb.ImportKeyRequest{Uri: req.URI, PrivateKey: der, Owner: ownerPB(req.Owner)})
	clear(der)
	return fromStatus(c.name, "ImportKey", err)
}

func (c *keyStoreClient) DeleteKey(ctx context.Context, req *keystore.DeleteKeyRequest) error {
	_, err := c.c.DeleteKey(ctx, &pluginpb.DeleteKeyRequest{Uri: req.URI})
	return fromStatus(c.name, "DeleteKey", err)
}

func (c *keyStoreClient) StoreCertificate(ctx context.Context, req *keystore.StoreCertificateRequest) error {
	_, err := c.c.StoreCertificate(ctx, &pluginpb.StoreCertificateRequest{Uri: req.URI, Certificate: req.Certificate.Raw})
	return fromStatus(c.name, "StoreCertificate", err)
}
