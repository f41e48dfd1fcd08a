package cloudsim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// ErrBrokerMode marks options that cannot work when the emulator is
// attached to another broker (Options.Broker); the CLI reports it as a
// usage error.
var ErrBrokerMode = errors.New("not possible in broker mode")

// requestFilters are the request topics of every served operation, in
// MQTT filter form. "+" spans one level, so the service never receives
// its own answers on .../accepted and .../rejected.
var requestFilters = []string{
	"$aws/certificates/create-from-csr/+",
	"$aws/certificates/create/+",
	"$aws/provisioning-templates/+/provision/+",
}

// serviceSubject names the certificate the service presents to an mqtts://
// broker. With mosquitto's use_identity_as_username it is the username.
var serviceSubject = pkix.Name{CommonName: "fleetprov-cloudsim-service", Organization: []string{"fleetprov"}}

// attachTimeout bounds Start in broker mode (connect and subscribe, retried
// every second meanwhile, so a broker still starting is waited for) and
// each answer's publish. A variable so a test can shorten it.
var attachTimeout = 10 * time.Second

// attachment is the service's client connection to another broker.
type attachment struct {
	ready     chan struct{} // closed once cm is set
	cm        *autopaho.ConnectionManager
	cancel    context.CancelFunc
	closeOnce sync.Once
	closeErr  error
}

// checkBrokerOptions refuses what broker mode cannot do, before anything
// starts, rather than failing later and silently.
func checkBrokerOptions(opts Options) error {
	u, err := url.Parse(opts.Broker)
	if err != nil || (u.Scheme != "mqtt" && u.Scheme != "mqtts") || u.Host == "" || u.Port() == "" {
		return fmt.Errorf("broker %q: want mqtt://HOST:PORT or mqtts://HOST:PORT: %w", opts.Broker, ErrBrokerMode)
	}
	if opts.Listen != "" {
		return fmt.Errorf("listen address %s and broker %s: the emulator either listens or attaches to a broker, not both: %w", opts.Listen, opts.Broker, ErrBrokerMode)
	}
	if opts.Account.Connect.enabled() || opts.Account.ConnectPerClient.enabled() {
		return fmt.Errorf("connect rate limits: the other broker takes the CONNECTs, the emulator never sees them: %w", ErrBrokerMode)
	}
	for _, f := range opts.Faults {
		if f.Action == FaultDisconnect {
			return fmt.Errorf("fault %s: the service cannot close a device's connection on another broker: %w", f, ErrBrokerMode)
		}
	}
	return nil
}

// attach connects the provisioning service to Options.Broker as an MQTT 5
// client and subscribes to the request topics. It returns once subscribed,
// so a device that publishes after Start is heard.
func (s *Server) attach() error {
	u, err := url.Parse(s.brokerURL)
	if err != nil {
		return fmt.Errorf("broker %q: %w", s.brokerURL, err)
	}
	tlsConf := s.brokerTLS
	if u.Scheme == "mqtts" && tlsConf == nil {
		if tlsConf, err = s.serviceTLS(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	// Set before connecting: a request can arrive as soon as the
	// subscription is acknowledged, possibly before NewConnection returns.
	a := &attachment{ready: make(chan struct{}), cancel: cancel}
	s.attached = a
	subscribed := make(chan struct{})
	var once sync.Once
	var lastErr error
	var errMu sync.Mutex
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        tlsConf,
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		ReconnectBackoff:              autopaho.NewConstantBackoff(time.Second),
		ConnectTimeout:                attachTimeout,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			// Subscribing again after every reconnect: the session is not
			// kept, so the broker forgot the subscriptions.
			go func() {
				subs := make([]paho.SubscribeOptions, len(requestFilters))
				for i, f := range requestFilters {
					subs[i] = paho.SubscribeOptions{Topic: f, QoS: 1}
				}
				sctx, scancel := context.WithTimeout(ctx, attachTimeout)
				defer scancel()
				ack, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: subs})
				if err == nil {
					for i, rc := range ack.Reasons {
						if rc >= 0x80 {
							err = fmt.Errorf("broker refused subscription to %s (reason 0x%02x)", requestFilters[i], rc)
							break
						}
					}
				}
				if err != nil {
					errMu.Lock()
					lastErr = err
					errMu.Unlock()
					s.log.Error("broker mode: subscribe to the request topics", "broker", s.brokerURL, "error", err)
					return
				}
				s.log.Info("broker mode: subscribed to the request topics", "broker", s.brokerURL)
				once.Do(func() { close(subscribed) })
			}()
		},
		OnConnectError: func(err error) {
			errMu.Lock()
			lastErr = err
			errMu.Unlock()
			s.log.Warn("broker mode: connect", "broker", s.brokerURL, "error", err)
		},
		ClientConfig: paho.ClientConfig{
			ClientID: "fleetprov-cloudsim-" + randomHex(6),
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				s.onAttachedRequest(pr.Packet.Topic, pr.Packet.Payload, pr.Packet.QoS)
				return true, nil
			}},
		},
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		cancel()
		return fmt.Errorf("broker %s: %w", s.brokerURL, err)
	}
	a.cm = cm
	close(a.ready)
	select {
	case <-subscribed:
	case <-time.After(attachTimeout):
		_ = a.close()
		errMu.Lock()
		defer errMu.Unlock()
		if lastErr == nil {
			lastErr = errors.New("timed out")
		}
		return fmt.Errorf("attach to broker %s: %w", s.brokerURL, lastErr)
	}
	s.log.Info("cloud emulator attached to a broker (one device at a time)", "broker", s.brokerURL, "dir", s.dir, "templates", len(s.templates))
	return nil
}

func (a *attachment) close() error {
	a.closeOnce.Do(func() {
		<-a.ready
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := a.cm.Disconnect(ctx)
		a.cancel()
		if errors.Is(err, autopaho.ConnectionDownError) {
			err = nil // never connected or already gone: nothing to close
		}
		a.closeErr = err
	})
	return a.closeErr
}

// serviceTLS is the service's mutual TLS to an mqtts:// broker: it trusts
// the emulator CA (the broker is expected to use the emulator's server
// certificate) and presents a fresh certificate from that CA. The
// certificate is not in the registry: it is the service's identity, not a
// device's.
func (s *Server) serviceTLS() (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("broker mode: service key: %w", err)
	}
	now := s.now()
	cert, err := s.ca.issue(key.Public(), serviceSubject, nil, now.Add(-5*time.Minute), deviceCertNotAfter)
	if err != nil {
		return nil, fmt.Errorf("broker mode: service certificate: %w", err)
	}
	return &tls.Config{
		RootCAs:      s.ca.pool,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// onAttachedRequest runs a request received from the attached broker. It
// is off paho's receive loop, like the embedded path, so a delay fault
// does not stall the connection.
func (s *Server) onAttachedRequest(topic string, payload []byte, qos byte) {
	req, ok := parseRequestTopic(topic)
	if !ok {
		return
	}
	// A broker does not say who published: the requester is taken to be
	// a device holding the emulator's claim, the only claim it issues.
	p := Principal{CertificateID: s.st.ClaimCertificateID, Claim: true}
	body := append([]byte(nil), payload...)
	s.dispatch(func() { s.handle(&brokerResponder{s: s, qos: qos}, p, req, body) })
}

// brokerResponder answers by publishing on the response topic; the broker
// hands it to every subscriber of that topic, which is why broker mode
// serves one device at a time.
type brokerResponder struct {
	s   *Server
	qos byte
}

var _ responder = (*brokerResponder)(nil)

func (r *brokerResponder) clientID() string { return "" }

// connection is one shared key: the broker hides connections, so a rate
// limit counts every request together.
func (r *brokerResponder) connection() any { return r.s.attached }

func (r *brokerResponder) respond(topic string, payload []byte) {
	a := r.s.attached
	<-a.ready
	ctx, cancel := context.WithTimeout(context.Background(), attachTimeout)
	defer cancel()
	qos := min(r.qos, 1)
	if _, err := a.cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload}); err != nil {
		r.s.log.Warn("answer not delivered", "topic", topic, "broker", r.s.brokerURL, "error", err)
		return
	}
	r.s.log.Debug("answered through the broker", "topic", topic, "qos", qos)
}

// disconnect cannot close a connection on another broker; Open refuses
// disconnect faults in broker mode, so this is not reached.
func (r *brokerResponder) disconnect(error) bool {
	r.s.log.Warn("cannot disconnect a device in broker mode; request dropped")
	return false
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}
