package states

import (
	"context"
	"sync"

	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/iotclient"
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
func DialIoT(ctx context.Context, r *engine.Run) (Cloud, error) {
	cfg := r.Config
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	return iotclient.Dial(ctx, iotclient.Options{
		Endpoint:       cfg.IoTDataHost,
		Port:           cfg.MQTTPort,
		ClaimCertPath:  cfg.ClaimCertPath,
		ClaimKeyPath:   cfg.ClaimKeyPath,
		RootCAPath:     cfg.RootCAPath,
		ClientID:       cfg.ClientID,
		ConnectTimeout: cfg.ConnectTimeout,
		Logger:         r.Log,
		Format:         cfg.PayloadFormat,
		ALPN:           cfg.MQTTALPN,
	})
}

// Session shares one claim connection between CreateCertificate and
// RegisterThing, dialled on first use. After a transient failure the
// connection is dropped so the retry starts from a fresh one.
type Session struct {
	Dial DialFunc

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
