// Package iotclient is the device side of the AWS IoT fleet provisioning
// MQTT API: CreateCertificateFromCsr and RegisterThing over MQTT 5 with
// mutual TLS, authenticated by the claim certificate.
//
// Every error it returns is either marked with failure.Transient (worth
// retrying: the network, timeouts, throttling, 5xx) or fatal (bad
// credentials, TLS verification, 4xx rejections, malformed answers).
package iotclient

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/google/uuid"

	"github.com/fleetprov/fleetprov/failure"
)

const (
	defaultPort           = 8883
	defaultConnectTimeout = 30 * time.Second
	keepAlive             = 30 // seconds, as Greengrass nucleus lite
	closeTimeout          = 5 * time.Second
	resubscribeTimeout    = 10 * time.Second
	// AWS IoT speaks MQTT over TLS on 443 only with this ALPN protocol.
	alpnMQTT443 = "x-amzn-mqtt-ca"
)

// Options configure Dial.
type Options struct {
	Endpoint      string // host or host:port
	Port          int    // used when Endpoint has no port; 0 = 8883
	ClaimCertPath string
	ClaimKeyPath  string
	// ClaimKey, when set, is the claim certificate's key held in a key
	// store (a PKCS#11 token): it signs the TLS handshake and ClaimKeyPath
	// is not read.
	ClaimKey crypto.Signer
	// Claim, when set, is the claim certificate and key already loaded
	// from ClaimCertPath and ClaimKeyPath, which then only name them in
	// errors: a load test's simulated devices share one claim, as a
	// factory's do, and each reading and parsing the files again would
	// cost the load generator CPU that the cloud under test needs.
	Claim      *tls.Certificate
	RootCAPath string
	// RootCAs, when set, are the roots already read from RootCAPath, which
	// then only names them in errors (for the same reason as Claim).
	RootCAs *x509.CertPool
	// ClientCert, when set, is presented instead of the claim certificate:
	// a device connecting with the certificate it was just given. The
	// claim fields are then not read.
	ClientCert     *tls.Certificate
	ClientID       string // "" = a random UUID, as Greengrass nucleus lite does
	ConnectTimeout time.Duration
	Logger         *slog.Logger
	Format         string // payload format: "json" ("" means json) or "cbor"
	// ALPN is the TLS ALPN protocol to offer: "" offers x-amzn-mqtt-ca on
	// port 443 (AWS IoT needs it there) and nothing elsewhere; "none"
	// offers nothing.
	ALPN string
	// Now is the clock an issued certificate's validity is checked
	// against; nil means time.Now.
	Now func() time.Time
	// dialLevel is the level of the "connecting" and "connected" records:
	// info (the zero Level), or debug where the caller reports the
	// outcome itself (ConnectOnce), so that one event is one line.
	dialLevel slog.Level
	// OnConnectRefused, if set, is told of each connection attempt the
	// server refused in its CONNACK (with the reason code) before Dial
	// either connects or gives up: how a load test counts throttled
	// CONNECTs (0x9F) that a retry then got past.
	OnConnectRefused func(reasonCode byte)
	// Proxy, if set, is the HTTP proxy to reach the endpoint through
	// (unless its NoProxy list names the endpoint).
	Proxy *Proxy
}

// KeysResult is an accepted CreateKeysAndCertificate answer: the cloud
// made the key pair, so the private key crossed the network.
type KeysResult struct {
	CertificateResult
	PrivateKeyPEM string
}

// CertificateResult is an accepted CreateCertificateFromCsr answer. The
// certificate is PENDING_ACTIVATION until RegisterThing uses the token.
type CertificateResult struct {
	CertificateID  string
	CertificatePEM string
	OwnershipToken string
}

// RegistrationResult is an accepted RegisterThing answer.
type RegistrationResult struct {
	ThingName           string
	DeviceConfiguration map[string]string
}

// Client is one MQTT connection to AWS IoT with the claim certificate.
// It is safe for concurrent use; requests of one kind are serialised.
type Client struct {
	endpoint string // host:port, for messages
	log      *slog.Logger
	codec    codec
	now      func() time.Time
	cm       *autopaho.ConnectionManager

	onRefused func(reasonCode byte)
	stop      context.CancelFunc // ends the connection manager

	// AWS puts no correlation token in answers: an answer is matched by
	// topic alone, so only one request of a kind may be in flight.
	csrMu  sync.Mutex
	keysMu sync.Mutex
	regMu  sync.Mutex

	mu         sync.Mutex
	subs       map[string]struct{} // response topics, restored on reconnect
	waiters    map[string]*waiter  // response topic -> the request waiting on it
	down       chan struct{}       // closed when the current (or, between connections, the next) connection drops
	lastErr    error               // last failed connection attempt
	abortDial  context.CancelFunc  // set while Dial waits; called on a fatal connect error
	tooLarge   error               // set when the server sent a packet over MaxPacketSize
	closed     chan struct{}
	closeOnce  sync.Once
	closeError error
}

type waiter struct {
	answers chan answer // buffered 1: the first answer wins
}

type answer struct {
	topic    string
	rejected bool
	payload  []byte
}

// Dial connects to the endpoint with the claim certificate and returns once
// the connection is up (CONNACK received) or fails. Bad credential files and
// TLS verification failures are fatal; an endpoint that does not answer
// within ConnectTimeout is transient.
func Dial(ctx context.Context, o Options) (*Client, error) {
	host, port, err := splitEndpoint(o.Endpoint, o.Port)
	if err != nil {
		return nil, err
	}
	cdc, err := codecFor(o.Format)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := tlsConfig(o, host, port)
	if err != nil {
		return nil, err
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	clientID := o.ClientID
	if clientID == "" {
		clientID = uuid.NewString()
	}
	timeout := o.ConnectTimeout
	if timeout <= 0 {
		timeout = defaultConnectTimeout
	}
	endpoint := net.JoinHostPort(host, strconv.Itoa(port))
	logger = logger.With(slog.String("endpoint", endpoint))

	attrs := []any{slog.String("clientId", clientID), slog.Duration("timeout", timeout)}
	if pu, err := o.Proxy.proxyFor(endpoint); err != nil {
		return nil, err
	} else if pu != nil {
		attrs = append(attrs, slog.String("proxy", pu.Host))
	}

	now := o.Now
	if now == nil {
		now = time.Now
	}
	c := &Client{
		endpoint: endpoint,
		log:      logger,
		codec:    cdc,
		now:      now,
		subs:     map[string]struct{}{},
		waiters:  map[string]*waiter{},
		down:     make(chan struct{}),
		closed:   make(chan struct{}),

		onRefused: o.OnConnectRefused,
	}

	waitCtx, cancelWait := context.WithTimeout(ctx, timeout)
	defer cancelWait()
	c.abortDial = cancelWait

	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{{Scheme: "tls", Host: endpoint}},
		TlsCfg:                        tlsCfg,
		KeepAlive:                     keepAlive,
		CleanStartOnInitialConnection: true,
		SessionExpiryInterval:         0,
		// The default is a flat 10 s between attempts, longer than a
		// whole provisioning run should wait for a flaky link.
		ReconnectBackoff: autopaho.NewExponentialBackoff(250*time.Millisecond, 5*time.Second, time.Second, 2),
		ConnectTimeout:   timeout,
		OnConnectionUp:   c.onConnectionUp,
		OnConnectionDown: c.onConnectionDown,
		OnConnectError:   c.onConnectError,
		// Announce the largest packet we take (MQTT 5 CONNECT Maximum
		// Packet Size): a conforming broker drops a larger one instead of
		// sending it, and the connection refuses it from one that does not.
		ConnectPacketBuilder: announceMaxPacketSize,
		AttemptConnection:    dialLimited(dialer{tls: tlsCfg, proxy: o.Proxy, log: logger}, MaxPacketSize, c.onPacketTooLarge),
		Debug:                slogAdapter{l: logger, level: slog.LevelDebug, component: "autopaho"},
		Errors:               slogAdapter{l: logger, level: slog.LevelWarn, component: "autopaho"},
		PahoDebug:            slogAdapter{l: logger, level: slog.LevelDebug, component: "paho"},
		PahoErrors:           slogAdapter{l: logger, level: slog.LevelError, component: "paho"},
		ClientConfig: paho.ClientConfig{
			ClientID:          clientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){c.onPublishReceived},
			PingHandler:       &keepAlivePinger{},
		},
	}

	// The connection outlives Dial's ctx (a caller's per-step deadline);
	// Close ends it.
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	c.stop = stop
	logger.Log(ctx, o.dialLevel, "connecting to AWS IoT", attrs...)
	cm, err := autopaho.NewConnection(runCtx, cfg)
	if err != nil {
		stop()
		return nil, fmt.Errorf("iotclient: connect to %s: %w", endpoint, err)
	}
	c.cm = cm

	awaitErr := cm.AwaitConnection(waitCtx)
	c.mu.Lock()
	c.abortDial = nil
	lastErr := c.lastErr
	c.mu.Unlock()
	if awaitErr == nil {
		logger.Log(ctx, o.dialLevel, "connected to AWS IoT", slog.String("clientId", clientID))
		return c, nil
	}

	stop()
	select {
	case <-cm.Done():
	case <-time.After(closeTimeout):
	}
	var perr *ProxyError
	if errors.As(lastErr, &perr) {
		// The proxy's message says all there is; autopaho's wrapping would
		// only repeat the endpoint.
		err := fmt.Errorf("iotclient: connect to %s: %w", endpoint, perr)
		if !perr.Transient() {
			return nil, err
		}
		return nil, failure.Unreached(failure.Transient(err))
	}
	if isFatalConnectError(lastErr) {
		return nil, fmt.Errorf("iotclient: connect to %s: %s: %w", endpoint, fatalConnectHint(lastErr, o), lastErr)
	}
	if isDialError(lastErr) && ctx.Err() == nil {
		return nil, failure.Unreached(failure.Transient(fmt.Errorf("iotclient: connect to %s: %w", endpoint, lastErr)))
	}
	if lastErr == nil {
		lastErr = awaitErr
	}
	if ctx.Err() != nil {
		return nil, failure.Transient(fmt.Errorf("iotclient: connect to %s: %w (last attempt: %w)", endpoint, ctx.Err(), lastErr))
	}
	// Nothing was asked of the cloud over a connection that never came up.
	return nil, failure.Unreached(failure.Transient(fmt.Errorf("iotclient: no MQTT connection to %s within %s: %w", endpoint, timeout, lastErr)))
}

// splitEndpoint accepts "host", "host:port" and "[v6]:port".
func splitEndpoint(endpoint string, port int) (string, int, error) {
	if endpoint == "" {
		return "", 0, errors.New("iotclient: no endpoint given")
	}
	if port == 0 {
		port = defaultPort
	}
	host, p, err := net.SplitHostPort(endpoint)
	if err != nil {
		// No port: the whole string is the host (brackets allowed for IPv6).
		host = endpoint
		if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
			host = host[1 : len(host)-1]
		}
	} else {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return "", 0, fmt.Errorf("iotclient: endpoint %q: port %q is not a number from 1 to 65535", endpoint, p)
		}
		port = n
	}
	if host == "" {
		return "", 0, fmt.Errorf("iotclient: endpoint %q has no host", endpoint)
	}
	if port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("iotclient: port %d is not from 1 to 65535", port)
	}
	return host, port, nil
}

func tlsConfig(o Options, host string, port int) (*tls.Config, error) {
	if o.ClientCert == nil && o.Claim == nil && (o.ClaimCertPath == "" || (o.ClaimKeyPath == "" && o.ClaimKey == nil)) {
		return nil, errors.New("iotclient: claim certificate and key paths are required")
	}
	if o.RootCAPath == "" && o.RootCAs == nil {
		return nil, errors.New("iotclient: root CA path is required")
	}
	var cert tls.Certificate
	var err error
	switch {
	case o.ClientCert != nil:
		cert = *o.ClientCert
	case o.Claim != nil:
		cert = *o.Claim
	case o.ClaimKey != nil:
		cert, err = certForSigner(o.ClaimCertPath, o.ClaimKey)
		if err != nil {
			return nil, err
		}
	default:
		// The error names the files, never their contents.
		cert, err = tls.LoadX509KeyPair(o.ClaimCertPath, o.ClaimKeyPath)
		if err != nil {
			return nil, fmt.Errorf("iotclient: load claim certificate %s and key %s: %w", o.ClaimCertPath, o.ClaimKeyPath, err)
		}
	}
	pool := o.RootCAs
	if pool == nil {
		if pool, err = LoadRootCAs(o.RootCAPath); err != nil {
			return nil, err
		}
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   host,
		MinVersion:   tls.VersionTLS12,
	}
	switch {
	case o.ALPN == "none":
	case o.ALPN != "":
		cfg.NextProtos = []string{o.ALPN}
	case port == 443:
		cfg.NextProtos = []string{alpnMQTT443}
	}
	return cfg, nil
}

// LoadRootCAs reads the PEM certificates in path as a pool of trusted
// roots.
func LoadRootCAs(path string) (*x509.CertPool, error) {
	caPEM, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("iotclient: read root CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("iotclient: root CA %s holds no PEM certificate", path)
	}
	return pool, nil
}

// certForSigner pairs the claim certificate file with a key held in a key
// store, checking they belong together: a mismatch would only show as a
// refused handshake.
func certForSigner(certPath string, key crypto.Signer) (tls.Certificate, error) {
	raw, err := os.ReadFile(certPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("iotclient: read claim certificate: %w", err)
	}
	var cert tls.Certificate
	for {
		var b *pem.Block
		b, raw = pem.Decode(raw)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			cert.Certificate = append(cert.Certificate, b.Bytes)
		}
	}
	if len(cert.Certificate) == 0 {
		return tls.Certificate{}, fmt.Errorf("iotclient: claim certificate %s holds no PEM certificate", certPath)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("iotclient: claim certificate %s: %w", certPath, err)
	}
	if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return tls.Certificate{}, fmt.Errorf("iotclient: claim certificate %s is not for the claim key in the key store (their public keys differ): use the key the claim certificate was issued for", certPath)
	}
	cert.Leaf, cert.PrivateKey = leaf, key
	return cert, nil
}

func announceMaxPacketSize(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
	if cp.Properties == nil {
		cp.Properties = &paho.ConnectProperties{}
	}
	size := uint32(MaxPacketSize)
	cp.Properties.MaximumPacketSize = &size
	// A device has at most one answer of each kind in flight. Announcing
	// so also keeps paho from making a 65,535-slot queue for each
	// connection (half a megabyte, cleared and collected every time).
	recvMax := uint16(receiveMaximum)
	cp.Properties.ReceiveMaximum = &recvMax
	return cp, nil
}

// receiveMaximum is the MQTT 5 Receive Maximum the device announces: the
// QoS 1 publishes it takes in flight at once.
const receiveMaximum = 16

func (c *Client) onPacketTooLarge(err *PacketTooLargeError) {
	c.log.Warn("refused a packet over the maximum packet size", slog.Uint64("bytes", err.Size), slog.Uint64("max", err.Max))
	c.mu.Lock()
	c.tooLarge = err
	c.mu.Unlock()
}

func (c *Client) onConnectError(err error) {
	c.log.Debug("connection attempt failed", slog.Any("error", err))
	var cerr *autopaho.ConnackError
	if c.onRefused != nil && errors.As(err, &cerr) {
		c.onRefused(cerr.ReasonCode)
	}
	c.mu.Lock()
	c.lastErr = err
	abort := c.abortDial
	c.mu.Unlock()
	// Retrying with the same certificates cannot succeed, and a refused or
	// unroutable dial is known at once: stop Dial now instead of at its
	// deadline. The engine retries a dial failure with its own backoff,
	// each try visible in the progress.
	if abort != nil && (isFatalConnectError(err) || isDialError(err)) {
		abort()
	}
}

func (c *Client) onConnectionUp(cm *autopaho.ConnectionManager, _ *paho.Connack) {
	// c.down is not replaced here but when the connection drops: autopaho
	// lets AwaitConnection return before it calls this, so a request may
	// already wait on c.down, and must hear when this connection drops.
	c.mu.Lock()
	topics := make([]string, 0, len(c.subs))
	for t := range c.subs {
		topics = append(topics, t)
	}
	c.mu.Unlock()
	if len(topics) == 0 {
		return
	}
	// The session does not outlive a connection (expiry 0): restore the
	// response subscriptions. Must not block autopaho's loop.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), resubscribeTimeout)
		defer cancel()
		sub := &paho.Subscribe{}
		for _, t := range topics {
			sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: t, QoS: 1})
		}
		if _, err := cm.Subscribe(ctx, sub); err != nil {
			c.log.Warn("restoring response subscriptions after reconnect failed", slog.Any("error", err))
		}
	}()
}

func (c *Client) onConnectionDown() bool {
	c.log.Warn("connection to AWS IoT lost; reconnecting")
	c.mu.Lock()
	close(c.down)
	c.down = make(chan struct{}) // for the next connection
	c.mu.Unlock()
	return true
}

func (c *Client) onPublishReceived(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	c.mu.Lock()
	w := c.waiters[p.Topic]
	c.mu.Unlock()
	if len(p.Payload) > MaxPayload {
		// Only a broker that ignores our Maximum Packet Size gets here
		// (the connection refuses packets far over it).
		c.log.Warn("dropping a message over the payload limit", slog.String("topic", p.Topic), slog.Int("bytes", len(p.Payload)), slog.Int("max", MaxPayload))
		return true, nil
	}
	if w == nil {
		// A late answer to a request that timed out, or someone else's.
		c.log.Debug("ignoring message nobody waits for", slog.String("topic", p.Topic), slog.Int("bytes", len(p.Payload)))
		return true, nil
	}
	a := answer{topic: p.Topic, rejected: isRejectedTopic(p.Topic), payload: p.Payload}
	select {
	case w.answers <- a:
	default: // already answered
	}
	return true, nil
}

func isRejectedTopic(topic string) bool {
	const suffix = "/rejected"
	return len(topic) >= len(suffix) && topic[len(topic)-len(suffix):] == suffix
}

// request subscribes to topic's accepted and rejected answers, publishes
// body on topic and returns the first answer. ctx bounds the whole exchange.
func (c *Client) request(ctx context.Context, op, topic string, body []byte) (answer, error) {
	accepted, rejected := topic+"/accepted", topic+"/rejected"
	select {
	case <-c.closed:
		return answer{}, fmt.Errorf("iotclient: %s: client is closed", op)
	default:
	}
	if err := c.cm.AwaitConnection(ctx); err != nil {
		return answer{}, failure.Transient(fmt.Errorf("iotclient: %s: not connected to %s: %w", op, c.endpoint, err))
	}

	w := &waiter{answers: make(chan answer, 1)}
	c.mu.Lock()
	down := c.down
	c.subs[accepted] = struct{}{}
	c.subs[rejected] = struct{}{}
	c.waiters[accepted] = w
	c.waiters[rejected] = w
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters, accepted)
		delete(c.waiters, rejected)
		c.mu.Unlock()
	}()

	// Subscribe every time, even if subscribed before: after a reconnect
	// the restoring SUBSCRIBE may not have been acknowledged yet, and an
	// answer sent before the subscription exists is lost.
	sa, err := c.cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: accepted, QoS: 1},
		{Topic: rejected, QoS: 1},
	}})
	if err != nil {
		if sa != nil {
			return answer{}, fmt.Errorf("iotclient: %s: subscribe to %s and %s refused (reason codes %v): check that the claim policy allows iot:Subscribe on them", op, accepted, rejected, sa.Reasons)
		}
		return answer{}, failure.Transient(fmt.Errorf("iotclient: %s: subscribe to %s: %w", op, accepted, err))
	}

	c.log.Debug("publishing request", slog.String("operation", op), slog.String("topic", topic), slog.Int("bytes", len(body)))
	pr, err := c.cm.Publish(ctx, &paho.Publish{QoS: 1, Topic: topic, Payload: body})
	if err != nil {
		if pr != nil && pr.ReasonCode >= 0x80 && pr.ReasonCode != 0x97 { // 0x97: quota exceeded
			return answer{}, fmt.Errorf("iotclient: %s: publish to %s refused (reason code 0x%02x): check that the claim policy allows iot:Publish on it: %w", op, topic, pr.ReasonCode, err)
		}
		return answer{}, failure.Transient(fmt.Errorf("iotclient: %s: publish to %s: %w", op, topic, err))
	}

	select {
	case a := <-w.answers:
		c.log.Debug("answer received", slog.String("operation", op), slog.String("topic", a.topic), slog.Int("bytes", len(a.payload)))
		return a, nil
	case <-down:
		c.mu.Lock()
		tooLarge := c.tooLarge
		c.mu.Unlock()
		if tooLarge != nil {
			return answer{}, fmt.Errorf("iotclient: %s: answer refused: %w", op, tooLarge)
		}
		// AWS answers only the connection that asked: after a reconnect
		// the answer will never come.
		return answer{}, failure.Transient(fmt.Errorf("iotclient: %s: connection to %s lost while waiting for an answer on %s", op, c.endpoint, accepted))
	case <-c.closed:
		return answer{}, fmt.Errorf("iotclient: %s: client closed while waiting for an answer on %s", op, accepted)
	case <-ctx.Done():
		return answer{}, failure.Transient(fmt.Errorf("iotclient: %s: no answer on %s or %s from %s: %w", op, accepted, rejected, c.endpoint, ctx.Err()))
	}
}

// decodeRejection turns a rejected answer into an error.
func (c *Client) decodeRejection(op string, a answer) error {
	var p rejectedPayload
	if err := c.codec.unmarshal(a.payload, &p); err != nil {
		return fmt.Errorf("iotclient: %s: malformed answer on %s: %w", op, a.topic, err)
	}
	if p.StatusCode == nil {
		return fmt.Errorf("iotclient: %s: malformed answer on %s: no statusCode", op, a.topic)
	}
	// Bounded here so that no caller can print a flood from the cloud.
	r := &Rejection{Operation: op, StatusCode: *p.StatusCode, ErrorCode: truncate(p.ErrorCode, maxErrorCode), ErrorMessage: truncate(p.ErrorMessage, maxErrorMessage)}
	// Debug: the error returned says it, once, as the run's retry or
	// failure.
	c.log.Debug("request rejected", slog.String("operation", op), slog.Int("statusCode", r.StatusCode),
		slog.String("errorCode", r.ErrorCode), slog.String("errorMessage", r.ErrorMessage))
	return classifyRejection(r)
}

// CreateCertificateFromCsr asks AWS IoT to sign csrPEM. The returned
// certificate stays PENDING_ACTIVATION until RegisterThing presents the
// ownership token (valid for one hour).
func (c *Client) CreateCertificateFromCsr(ctx context.Context, csrPEM string) (*CertificateResult, error) {
	const op = opCreateCertificateFromCsr
	if csrPEM == "" {
		return nil, fmt.Errorf("iotclient: %s: empty CSR", op)
	}
	csrKey, err := csrPublicKey(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("iotclient: %s: %w", op, err)
	}
	body, err := c.codec.marshal(createCertificateFromCsrRequest{CertificateSigningRequest: csrPEM})
	if err != nil {
		return nil, fmt.Errorf("iotclient: %s: encode request: %w", op, err)
	}
	c.csrMu.Lock()
	defer c.csrMu.Unlock()
	a, err := c.request(ctx, op, createCertificateFromCsrTopic(c.codec.name()), body)
	if err != nil {
		return nil, err
	}
	if a.rejected {
		return nil, c.decodeRejection(op, a)
	}
	var p createCertificateFromCsrAccepted
	if err := c.codec.unmarshal(a.payload, &p); err != nil {
		return nil, fmt.Errorf("iotclient: %s: malformed answer on %s: %w", op, a.topic, err)
	}
	res := &CertificateResult{CertificateID: p.CertificateID, CertificatePEM: p.CertificatePEM, OwnershipToken: p.CertificateOwnershipToken}
	if err := checkCertificateAnswer(op, a.topic, res, nil); err != nil {
		return nil, err
	}
	if why := validateCertificate(res, certCheck{now: c.now, key: csrKey, keyName: "the device key in the CSR"}); why != "" {
		return nil, fmt.Errorf("iotclient: %s: refused answer on %s: %s", op, a.topic, why)
	}
	c.log.Info("certificate created", slog.String("certificateId", p.CertificateID),
		slog.Int("certificatePemBytes", len(p.CertificatePEM)), slog.Int("ownershipTokenBytes", len(p.CertificateOwnershipToken)))
	return res, nil
}

// CreateKeysAndCertificate asks AWS IoT to make a key pair and a
// certificate for it. Prefer CreateCertificateFromCsr: here the private key
// crosses the network.
func (c *Client) CreateKeysAndCertificate(ctx context.Context) (*KeysResult, error) {
	const op = opCreateKeysAndCertificate
	body, err := c.codec.marshal(createKeysAndCertificateRequest{})
	if err != nil {
		return nil, fmt.Errorf("iotclient: %s: encode request: %w", op, err)
	}
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	a, err := c.request(ctx, op, createKeysAndCertificateTopic(c.codec.name()), body)
	if err != nil {
		return nil, err
	}
	if a.rejected {
		return nil, c.decodeRejection(op, a)
	}
	var p createKeysAndCertificateAccepted
	if err := c.codec.unmarshal(a.payload, &p); err != nil {
		// The decoder's message may quote the payload, which holds a
		// private key: keep it out of the error.
		return nil, fmt.Errorf("iotclient: %s: malformed answer on %s (%d bytes)", op, a.topic, len(a.payload))
	}
	res := &KeysResult{
		CertificateResult: CertificateResult{CertificateID: p.CertificateID, CertificatePEM: p.CertificatePEM, OwnershipToken: p.CertificateOwnershipToken},
		PrivateKeyPEM:     p.PrivateKey,
	}
	if err := checkCertificateAnswer(op, a.topic, &res.CertificateResult, &p.PrivateKey); err != nil {
		return nil, err
	}
	if len(p.PrivateKey) > maxPrivateKeyPEM {
		return nil, fmt.Errorf("iotclient: %s: refused answer on %s: privateKey is %d bytes, over the %d-byte limit", op, a.topic, len(p.PrivateKey), maxPrivateKeyPEM)
	}
	pub, err := privateKeyPublic(p.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("iotclient: %s: refused answer on %s: %w", op, a.topic, err)
	}
	if why := validateCertificate(&res.CertificateResult, certCheck{now: c.now, key: pub, keyName: "the privateKey sent with it"}); why != "" {
		return nil, fmt.Errorf("iotclient: %s: refused answer on %s: %s", op, a.topic, why)
	}
	c.log.Info("keys and certificate created", slog.String("certificateId", p.CertificateID),
		slog.Int("certificatePemBytes", len(p.CertificatePEM)), slog.Int("ownershipTokenBytes", len(p.CertificateOwnershipToken)))
	return res, nil
}

// checkCertificateAnswer rejects an accepted answer with a missing field;
// privateKey is checked to be PEM when non-nil. validateCertificate checks
// the rest.
func checkCertificateAnswer(op, topic string, r *CertificateResult, privateKey *string) error {
	var missing []string
	if r.CertificateID == "" {
		missing = append(missing, "certificateId")
	}
	if r.CertificatePEM == "" {
		missing = append(missing, "certificatePem")
	}
	if privateKey != nil && *privateKey == "" {
		missing = append(missing, "privateKey")
	}
	if r.OwnershipToken == "" {
		missing = append(missing, "certificateOwnershipToken")
	}
	if len(missing) > 0 {
		return fmt.Errorf("iotclient: %s: malformed answer on %s: empty or missing %v", op, topic, missing)
	}
	if privateKey != nil {
		if blk, _ := pem.Decode([]byte(*privateKey)); blk == nil || !strings.HasSuffix(blk.Type, "PRIVATE KEY") {
			return fmt.Errorf("iotclient: %s: malformed answer on %s: privateKey is not a PEM private key", op, topic)
		}
	}
	return nil
}

// templateNameRE is AWS's rule for template names; it also keeps MQTT
// wildcards and separators out of the request topic.
var templateNameRE = regexp.MustCompile(`^[0-9A-Za-z_-]{1,36}$`)

// RegisterThing asks AWS IoT to run the provisioning template with the
// ownership token and parameters.
func (c *Client) RegisterThing(ctx context.Context, templateName string, token string, params map[string]string) (*RegistrationResult, error) {
	const op = opRegisterThing
	if !templateNameRE.MatchString(templateName) {
		return nil, fmt.Errorf("iotclient: %s: template name %q must be 1-36 characters of 0-9 A-Z a-z _ -", op, templateName)
	}
	if token == "" {
		return nil, fmt.Errorf("iotclient: %s: empty certificate ownership token", op)
	}
	body, err := c.codec.marshal(registerThingRequest{CertificateOwnershipToken: token, Parameters: params})
	if err != nil {
		return nil, fmt.Errorf("iotclient: %s: encode request: %w", op, err)
	}
	c.regMu.Lock()
	defer c.regMu.Unlock()
	a, err := c.request(ctx, op, registerThingTopic(templateName, c.codec.name()), body)
	if err != nil {
		return nil, err
	}
	if a.rejected {
		return nil, c.decodeRejection(op, a)
	}
	var p registerThingAccepted
	if err := c.codec.unmarshal(a.payload, &p); err != nil {
		return nil, fmt.Errorf("iotclient: %s: malformed answer on %s: %w", op, a.topic, err)
	}
	if p.ThingName == "" {
		return nil, fmt.Errorf("iotclient: %s: malformed answer on %s: empty or missing thingName", op, a.topic)
	}
	if why := validateRegistration(&p); why != "" {
		return nil, fmt.Errorf("iotclient: %s: refused answer on %s: %s", op, a.topic, why)
	}
	if p.DeviceConfiguration == nil {
		p.DeviceConfiguration = map[string]string{}
	}
	c.log.Info("thing registered", slog.String("thingName", p.ThingName), slog.Int("deviceConfigurationKeys", len(p.DeviceConfiguration)))
	return &RegistrationResult{ThingName: p.ThingName, DeviceConfiguration: p.DeviceConfiguration}, nil
}

// Close sends DISCONNECT and waits, bounded, for the connection to end.
// Requests still waiting fail. Calling Close again returns the first result.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if err := c.cm.Disconnect(ctx); err != nil {
			c.closeError = fmt.Errorf("iotclient: disconnect from %s: %w", c.endpoint, err)
		}
		c.stop()
	})
	return c.closeError
}
