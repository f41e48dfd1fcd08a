package states

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"sync"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/iotclient"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// Cloud is the AWS IoT fleet provisioning API as the states use it.
type Cloud interface {
	CreateCertificateFromCsr(ctx context.Context, csrPEM string) (*iotclient.CertificateResult, error)
	CreateKeysAndCertificate(ctx context.Context) (*iotclient.KeysResult, error)
	RegisterThing(ctx context.Context, templateName, token string, params map[string]string) (*iotclient.RegistrationResult, error)
	Close() error
}

// DialFunc opens a connection to the cloud for a run.
type DialFunc func(ctx context.Context, r *engine.Run) (Cloud, error)

// DialIoT connects with the claim certificate over MQTT 5 and mutual TLS.
// A claim key in a key store (claimKeyPath a pkcs11: URI) signs there; the
// store stays open while the connection is.
func DialIoT(ctx context.Context, r *engine.Run) (Cloud, error) {
	cfg := r.Config
	var (
		ks     keystore.KeyStore
		signer crypto.Signer
	)
	if config.IsKeyURI(cfg.ClaimKeyPath) {
		storeCtx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
		var err error
		if ks, err = keystore.Open(cfg.ClaimKeyPath); err != nil {
			return nil, fmt.Errorf("claim key: %w", err)
		}
		if signer, err = ks.CreateSigner(storeCtx, &keystore.CreateSignerRequest{URI: cfg.ClaimKeyPath}); err != nil {
			ks.Close()
			return nil, fmt.Errorf("claim key: %w", err)
		}
	}
	// Dial bounds itself by ConnectTimeout. A deadline of ours on ctx
	// would end at the same moment and make a connection that timed out
	// (nothing asked of the cloud) look like an interrupted one: not
	// marked unreached, and reported as a bare "context deadline exceeded".
	c, err := iotclient.Dial(ctx, iotclient.Options{
		Endpoint:       cfg.IoTDataHost,
		Port:           cfg.MQTTPort,
		ClaimCertPath:  cfg.ClaimCertPath,
		ClaimKeyPath:   cfg.ClaimKeyPath,
		ClaimKey:       signer,
		RootCAPath:     cfg.RootCAPath,
		ClientID:       cfg.ClientID,
		ConnectTimeout: cfg.ConnectTimeout,
		Logger:         r.Log,
		Format:         cfg.PayloadFormat,
		ALPN:           cfg.MQTTALPN,
		Proxy:          EndpointProxy(cfg),
	})
	if err != nil {
		if ks != nil {
			ks.Close()
		}
		return nil, err
	}
	if ks == nil {
		return c, nil
	}
	return &storeCloud{Cloud: c, ks: ks}, nil
}

// storeCloud is a connection whose claim key lives in a key store, closed
// with it.
type storeCloud struct {
	Cloud
	ks keystore.KeyStore
}

func (s *storeCloud) Close() error {
	return errors.Join(s.Cloud.Close(), s.ks.Close())
}

// Session shares one claim connection between CreateCertificate and
// RegisterThing, dialled on first use. After a transient failure the
// connection is dropped so the retry starts from a fresh one.
type Session struct {
	Dial DialFunc
	// Probe asks whether the cloud accepts a certificate for a
	// connection; nil means ProbeIoT.
	Probe ProbeFunc

	mu sync.Mutex
	c  Cloud
}

func (s *Session) get(ctx context.Context, r *engine.Run) (Cloud, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		return s.c, nil
	}
	c, err := s.Dial(ctx, r)
	if err != nil {
		return nil, err
	}
	s.c = c
	return c, nil
}

func (s *Session) drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		_ = s.c.Close()
		s.c = nil
	}
}

// Close ends the connection, if any.
func (s *Session) Close() error {
	s.drop()
	return nil
}

// ProbeFunc reports whether the cloud accepts certPEM, with the device key
// the journal names, for a connection: whether it is ACTIVE.
type ProbeFunc func(ctx context.Context, r *engine.Run, certPEM string) (bool, error)

// errKeyReplaced: the device key is no longer the one a certificate was
// issued for.
var errKeyReplaced = errors.New("the device key is no longer the certificate's")

// deviceSigner opens the device key the journal names (the config's,
// before one is journaled) and checks that pub is its public key:
// errKeyReplaced if not. It returns the key's URI for messages; close
// releases the key store.
func deviceSigner(ctx context.Context, r *engine.Run, pub crypto.PublicKey) (crypto.Signer, func(), string, error) {
	uri := r.Data.KeyURI
	if uri == "" {
		uri = r.Config.KeyURI
	}
	ks, err := keystore.Open(uri)
	if err != nil {
		return nil, nil, uri, fmt.Errorf("device key: %w", err)
	}
	signer, err := ks.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: uri})
	if err != nil {
		ks.Close()
		return nil, nil, uri, fmt.Errorf("device key: %w", err)
	}
	if k, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub) {
		ks.Close()
		return nil, nil, uri, errKeyReplaced
	}
	return signer, func() { ks.Close() }, uri, nil
}

// ProbeIoT connects to the endpoint with the certificate and the device
// key, as far as the TLS handshake: AWS IoT completes it only for an
// ACTIVE certificate.
func ProbeIoT(ctx context.Context, r *engine.Run, certPEM string) (bool, error) {
	cfg := r.Config
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return false, err
	}
	signer, closeKey, _, err := deviceSigner(ctx, r, cert.PublicKey)
	if err != nil {
		return false, err
	}
	defer closeKey()
	return iotclient.CertificateActive(ctx, iotclient.ProbeOptions{
		Endpoint:       cfg.IoTDataHost,
		Port:           cfg.MQTTPort,
		RootCAPath:     cfg.RootCAPath,
		CertificatePEM: certPEM,
		Key:            signer,
		ALPN:           cfg.MQTTALPN,
		Timeout:        cfg.ConnectTimeout,
		Proxy:          EndpointProxy(cfg),
	})
}

// EndpointProxy is the HTTP proxy that every connection to the endpoint
// goes through (the claim connection, the probe, and any connection with
// the device's own certificate), or nil to connect directly.
func EndpointProxy(cfg *config.Config) *iotclient.Proxy {
	if cfg.ProxyURL == "" {
		return nil
	}
	return &iotclient.Proxy{URL: cfg.ProxyURL, Username: cfg.ProxyUsername, Password: cfg.ProxyPassword, NoProxy: cfg.NoProxy}
}

func (s *Session) probe(ctx context.Context, r *engine.Run, certPEM string) (bool, error) {
	if s.Probe != nil {
		return s.Probe(ctx, r, certPEM)
	}
	return ProbeIoT(ctx, r, certPEM)
}
