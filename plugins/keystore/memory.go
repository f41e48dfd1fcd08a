package keystore

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"sync"
)

// Memory is a KeyStore that holds keys in memory, under any URI, with every
// optional ability. Keys are lost when it is dropped: it is for tests and
// for plugin authors to start from, not for devices.
type Memory struct {
	mu    sync.Mutex
	keys  map[string]crypto.Signer
	certs map[string]*x509.Certificate
}

var (
	_ KeyStore          = (*Memory)(nil)
	_ KeyImporter       = (*Memory)(nil)
	_ KeyDeleter        = (*Memory)(nil)
	_ CertificateStorer = (*Memory)(nil)
)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{keys: map[string]crypto.Signer{}, certs: map[string]*x509.Certificate{}}
}

func (m *Memory) CreateKey(_ context.Context, req *CreateKeyRequest) (*CreateKeyResponse, error) {
	key, err := NewKey(req.Algorithm)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys[req.URI] = key
	delete(m.certs, req.URI)
	return &CreateKeyResponse{URI: req.URI, PublicKey: key.Public()}, nil
}

func (m *Memory) key(uri string) (crypto.Signer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.keys[uri]
	if !ok {
		return nil, fmt.Errorf("key %s: %w", uri, ErrKeyNotFound)
	}
	return k, nil
}

func (m *Memory) GetPublicKey(_ context.Context, req *GetPublicKeyRequest) (crypto.PublicKey, error) {
	k, err := m.key(req.URI)
	if err != nil {
		return nil, err
	}
	return k.Public(), nil
}

func (m *Memory) CreateSigner(_ context.Context, req *CreateSignerRequest) (crypto.Signer, error) {
	return m.key(req.URI)
}

func (m *Memory) ImportKey(_ context.Context, req *ImportKeyRequest) error {
	s, ok := req.PrivateKey.(crypto.Signer)
	if !ok {
		return fmt.Errorf("key %s: key type %T cannot sign", req.URI, req.PrivateKey)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys[req.URI] = s
	delete(m.certs, req.URI)
	return nil
}

func (m *Memory) DeleteKey(_ context.Context, req *DeleteKeyRequest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.keys, req.URI)
	delete(m.certs, req.URI)
	return nil
}

func (m *Memory) StoreCertificate(_ context.Context, req *StoreCertificateRequest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.keys[req.URI]; !ok {
		return fmt.Errorf("key %s: %w", req.URI, ErrKeyNotFound)
	}
	m.certs[req.URI] = req.Certificate
	return nil
}

// Certificate returns the certificate stored for uri, or nil.
func (m *Memory) Certificate(uri string) *x509.Certificate {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.certs[uri]
}

func (m *Memory) Close() error { return nil }
