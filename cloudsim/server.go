// Package cloudsim is a local stand-in for AWS IoT Core's fleet
// provisioning: an MQTT 5 broker with mutual TLS, its own CA, the
// CreateCertificateFromCsr and RegisterThing APIs, provisioning templates, a
// registry of things and certificates on disk, and fault injection for tests.
//
// It shares no payload types or topic builders with the device side: each
// side encodes the wire format on its own from the AWS documentation, so a
// misspelled field cannot hide by being wrong on both sides.
package cloudsim

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Options configure Open.
type Options struct {
	Dir string
	// Listen overrides the address recorded by Init; "" uses the recorded one.
	Listen string
	Logger *slog.Logger
	Faults []Fault
	// TokenLifetime is how long an ownership token is honoured; 0 uses the
	// recorded value, or 1 h.
	TokenLifetime time.Duration
	// Now replaces the clock, so tests can expire tokens without waiting.
	Now func() time.Time
	// Authorizer decides publish and subscribe; nil uses the default (claim
	// certificates limited to the provisioning topics, device certificates
	// unrestricted).
	Authorizer Authorizer
}

// Server is a running (or ready to run) emulator.
type Server struct {
	dir      string
	listen   string
	log      *slog.Logger
	now      func() time.Time
	lifetime time.Duration
	st       settings
	ca       *authority
	auth     Authorizer
	faults   *faultSet

	templates map[string]*Template
	policies  map[string]bool // policies on disk, by name

	mu  sync.Mutex // guards reg and every registry file write
	reg *Registry

	broker   *mqtt.Server
	listener *listeners.TCP

	principals sync.Map // *mqtt.Client -> Principal

	workMu    sync.Mutex // orders work.Add against Close's work.Wait
	work      sync.WaitGroup
	closing   chan struct{}
	closed    bool
	closeOnce sync.Once
}

// Open loads an emulator directory written by Init and prepares the broker.
// Nothing listens until Start.
func Open(opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("no emulator directory given")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("directory %s: %w", opts.Dir, err)
	}
	stPath := filepath.Join(dir, fileSettings)
	stJSON, err := os.ReadFile(stPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s not found: %s is %w; run `fleetprov cloud init --dir %s` first", stPath, opts.Dir, ErrNotInitialised, opts.Dir)
		}
		return nil, fmt.Errorf("read settings: %w", err)
	}
	if opts.Listen != "" {
		if _, _, err := splitListen(opts.Listen); err != nil {
			return nil, err
		}
	}
	s := &Server{dir: dir, log: opts.Logger, now: opts.Now, closing: make(chan struct{}), auth: opts.Authorizer}
	if err := json.Unmarshal(stJSON, &s.st); err != nil {
		return nil, fmt.Errorf("%s: %w", stPath, err)
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.auth == nil {
		s.auth = DefaultAuthorizer{}
	}
	s.listen = opts.Listen
	if s.listen == "" {
		s.listen = s.st.Listen
	}
	s.lifetime = opts.TokenLifetime
	if s.lifetime == 0 && s.st.TokenLifetime != "" {
		if d, err := time.ParseDuration(s.st.TokenLifetime); err == nil && d > 0 {
			s.lifetime = d
		}
	}
	if s.lifetime <= 0 {
		s.lifetime = DefaultTokenLifetime
	}
	s.faults = newFaultSet(opts.Faults)

	if s.ca, err = loadAuthority(dir); err != nil {
		return nil, err
	}
	if s.reg, err = ReadRegistry(dir); err != nil {
		return nil, err
	}
	if err := s.loadTemplates(); err != nil {
		return nil, err
	}
	if err := s.loadPolicies(); err != nil {
		return nil, err
	}
	if s.reg.sweep(s.now(), s.lifetime) {
		if err := writeRegistry(s.dir, s.reg); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Server) loadTemplates() error {
	s.templates = map[string]*Template{}
	paths, err := filepath.Glob(filepath.Join(s.dir, dirTemplates, "*.json"))
	if err != nil {
		return fmt.Errorf("list templates: %w", err)
	}
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".json")
		body, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read template: %w", err)
		}
		t, err := ParseTemplate(name, body)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		s.templates[name] = t
	}
	return nil
}

func (s *Server) loadPolicies() error {
	s.policies = map[string]bool{}
	paths, err := filepath.Glob(filepath.Join(s.dir, dirPolicies, "*.json"))
	if err != nil {
		return fmt.Errorf("list policies: %w", err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read policy: %w", err)
		}
		if !json.Valid(b) {
			return fmt.Errorf("%s: policy is not valid JSON", p)
		}
		s.policies[strings.TrimSuffix(filepath.Base(p), ".json")] = true
	}
	return nil
}

// Start binds the listen address and serves; it returns once connections
// are accepted.
func (s *Server) Start() error {
	serverCert, err := tls.LoadX509KeyPair(filepath.Join(s.dir, fileServerCert), filepath.Join(s.dir, fileServerKey))
	if err != nil {
		return fmt.Errorf("load server certificate: %w", err)
	}
	tlsConf := &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    s.ca.pool,
		MinVersion:   tls.VersionTLS12,
	}
	broker := mqtt.New(&mqtt.Options{
		Logger: slog.New(brokerLogHandler{next: s.log.Handler()}).With("component", "mqtt"),
		// AWS IoT has no $SYS tree; publishing it hourly keeps the log quiet.
		SysTopicResendInterval: 3600,
	})
	// Set before the listener exists: OnConnect needs it for CONNACK.
	s.broker = broker
	if err := broker.AddHook(&hook{s: s}, nil); err != nil {
		return fmt.Errorf("add broker hook: %w", err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "aws-iot", Address: s.listen, TLSConfig: tlsConf})
	// AddListener binds the socket, so once it returns connections queue
	// and Serve only starts accepting them.
	if err := broker.AddListener(l); err != nil {
		return fmt.Errorf("listen on %s: %w", s.listen, err)
	}
	if err := broker.Serve(); err != nil {
		_ = broker.Close()
		return fmt.Errorf("start broker: %w", err)
	}
	s.listener = l
	s.log.Info("cloud emulator listening", "addr", l.Address(), "dir", s.dir, "templates", len(s.templates))
	return nil
}

// Addr is the address the server listens on (the real port when started
// with port 0).
func (s *Server) Addr() string {
	if s.listener != nil {
		return s.listener.Address()
	}
	return s.listen
}

// Close stops accepting, waits for requests being answered and closes every
// connection.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.workMu.Lock()
		s.closed = true
		close(s.closing)
		s.workMu.Unlock()
		s.work.Wait()
		if s.broker != nil {
			err = s.broker.Close()
		}
	})
	return err
}

// FreePort returns a 127.0.0.1 address with a port free at the time of the
// call, for tests that need to know the port before the emulator starts.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Principal is who is connected: the certificate presented at TLS time, as
// the registry knows it.
type Principal struct {
	CertificateID string
	Claim         bool
	ThingName     string
}

// Action is an IoT policy action the broker asks about.
type Action string

// Actions checked today. Receive is not checked separately yet: answers are
// written to the requester directly and other topics are open to devices.
const (
	ActionPublish   Action = "iot:Publish"
	ActionSubscribe Action = "iot:Subscribe"
)

// Authorizer decides whether a principal may act on a topic or topic
// filter. It is an interface so full IoT policy evaluation can replace the
// default without touching the broker glue.
type Authorizer interface {
	Authorize(p Principal, action Action, topic string) bool
}

// DefaultAuthorizer limits a claim certificate to the provisioning topics of
// the operations the emulator serves (as the Greengrass claim policy does)
// and lets device certificates do anything.
type DefaultAuthorizer struct{}

// Authorize implements Authorizer.
func (DefaultAuthorizer) Authorize(p Principal, action Action, topic string) bool {
	if !p.Claim {
		return true
	}
	return isProvisioningTopic(topic, action == ActionSubscribe)
}

// certificateOf returns the client certificate of a TLS connection.
func certificateOf(cl *mqtt.Client) (*x509.Certificate, error) {
	conn, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return nil, errors.New("connection is not TLS")
	}
	state := conn.ConnectionState()
	if len(state.PeerCertificates) == 0 {
		return nil, errors.New("no client certificate")
	}
	return state.PeerCertificates[0], nil
}

// hook is the glue between mochi and the emulator.
type hook struct {
	mqtt.HookBase
	s *Server
}

func (h *hook) ID() string { return "cloudsim" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnDisconnect,
		mqtt.OnPublish, mqtt.OnPublished:
		return true
	}
	return false
}

// OnConnect admits only the claim certificate and ACTIVE device
// certificates. The TLS layer already refused certificates the CA did not
// sign; a certificate that is pending, inactive or unknown to the registry
// gets CONNACK "not authorized" here.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	s := h.s
	cert, err := certificateOf(cl)
	if err != nil {
		s.log.Warn("connection refused", "client", cl.ID, "remote", cl.Net.Remote, "reason", err.Error())
		_ = s.broker.SendConnack(cl, packets.ErrNotAuthorized, false, nil)
		return packets.ErrNotAuthorized
	}
	id := CertificateID(cert.Raw)
	s.mu.Lock()
	c, ok := s.reg.Certificates[id]
	var p Principal
	status := "UNKNOWN"
	if ok {
		p = Principal{CertificateID: id, Claim: c.Claim, ThingName: c.ThingName}
		status = c.Status
	}
	s.mu.Unlock()
	if !ok || status != StatusActive {
		s.log.Warn("connection refused", "client", cl.ID, "remote", cl.Net.Remote, "certificateId", id, "status", status)
		_ = s.broker.SendConnack(cl, packets.ErrNotAuthorized, false, nil)
		return packets.ErrNotAuthorized
	}
	s.principals.Store(cl, p)
	s.log.Debug("client connected", "client", cl.ID, "remote", cl.Net.Remote, "certificateId", id, "claim", p.Claim)
	return nil
}

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	_, ok := h.s.principals.Load(cl)
	return ok
}

func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.s.principals.Delete(cl)
}

// OnACLCheck asks the Authorizer. mochi calls it with write=true for a
// publish and write=false for a subscribe filter or a delivery.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	v, ok := h.s.principals.Load(cl)
	if !ok {
		return false
	}
	action := ActionSubscribe
	if write {
		action = ActionPublish
	}
	allowed := h.s.auth.Authorize(v.(Principal), action, topic)
	if !allowed {
		h.s.log.Warn("not authorized", "client", cl.ID, "action", string(action), "topic", topic)
	}
	return allowed
}

// OnPublish keeps every provisioning topic out of the broker's fan-out:
// AWS answers only the connection that asked, so neither requests nor
// (spoofed) answers may reach other subscribers. The request is still
// acknowledged and handled in OnPublished.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if isProvisioningTopic(pk.TopicName, false) {
		return pk, packets.CodeSuccessIgnore
	}
	return pk, nil
}

func (h *hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	req, ok := parseRequestTopic(pk.TopicName)
	if !ok {
		return
	}
	s := h.s
	p, _ := s.principals.Load(cl)
	principal, _ := p.(Principal)
	payload := append([]byte(nil), pk.Payload...)
	s.workMu.Lock()
	defer s.workMu.Unlock()
	if s.closed {
		return
	}
	s.work.Add(1)
	// Off the client's read loop: a delay fault must not stop the broker
	// from reading (and answering PINGREQ on) that connection.
	go func() {
		defer s.work.Done()
		s.handle(cl, principal, req, payload, pk.FixedHeader.Qos)
	}()
}

// deliver writes an answer to one connection only, whether or not it
// subscribed, as AWS IoT does. The QoS is the client's subscription QoS
// when it has one, else the request's, at most 1.
func (s *Server) deliver(cl *mqtt.Client, topic string, payload []byte, reqQoS byte) {
	qos := reqQoS
	subscribed := false
	for filter, sub := range cl.State.Subscriptions.GetAll() {
		if topicMatches(filter, topic) {
			if !subscribed || sub.Qos > qos {
				qos = sub.Qos
			}
			subscribed = true
		}
	}
	if qos > 1 {
		qos = 1
	}
	out := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     payload,
		Created:     time.Now().Unix(),
	}
	if qos > 0 {
		id, err := cl.NextPacketID()
		if err != nil {
			s.log.Warn("answer not delivered", "client", cl.ID, "topic", topic, "error", err)
			return
		}
		out.PacketID = uint16(id)
		// In flight so the client's PUBACK is matched and a resumed
		// session gets the answer again.
		cl.State.Inflight.Set(out)
	}
	if err := cl.WritePacket(out); err != nil {
		s.log.Info("answer not delivered", "client", cl.ID, "topic", topic, "error", err)
		return
	}
	s.log.Debug("answered", "client", cl.ID, "topic", topic, "qos", qos, "subscribed", subscribed)
}

// topicMatches reports whether an MQTT topic filter matches a topic.
func topicMatches(filter, topic string) bool {
	fp := strings.Split(filter, "/")
	tp := strings.Split(topic, "/")
	// MQTT: a leading wildcard never matches a topic starting with $.
	if strings.HasPrefix(topic, "$") && (fp[0] == "+" || fp[0] == "#") {
		return false
	}
	for i, f := range fp {
		if f == "#" {
			return true
		}
		if i >= len(tp) {
			return false
		}
		if f != "+" && f != tp[i] {
			return false
		}
	}
	return len(fp) == len(tp)
}
