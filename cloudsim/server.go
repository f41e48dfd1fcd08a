// Package cloudsim is a local stand-in for AWS IoT Core's fleet
// provisioning: an MQTT 5 broker with mutual TLS, its own CA, the
// CreateCertificateFromCsr, CreateKeysAndCertificate and RegisterThing APIs
// in JSON and CBOR, provisioning templates, a registry of things and
// certificates on disk, and fault injection for tests. For interoperability
// tests it can instead attach to a broker it did not write (Options.Broker).
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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	// Authorizer decides connect, publish, subscribe and receive; nil
	// evaluates the IoT policies attached to each certificate
	// (DefaultAuthorizer).
	Authorizer Authorizer
	// ClaimPolicies name the policies (policies/NAME.json) the claim
	// certificate gets; none uses cloud.json's claimPolicies, or the
	// Greengrass claim policy init writes.
	ClaimPolicies []string
	// StrictDelivery answers only a client subscribed to the response
	// topic. Off by default: AWS IoT answers the requesting connection
	// whether it subscribed or not, and Greengrass nucleus lite relies on
	// that (it never subscribes).
	StrictDelivery bool
	// SingleUseTokens refuses a second RegisterThing with the same
	// ownership token. Off by default: AWS does not document a second use,
	// and a device that lost power after registering repeats the call.
	SingleUseTokens bool
	// RateLimit throttles each connection (429 ThrottlingException); the
	// zero value is no limit.
	RateLimit RateLimit
	// Account enforces AWS IoT's account-wide quotas: CONNECTs per
	// account and per client id (CONNACK 0x9F connection rate exceeded;
	// 3 server unavailable under MQTT 3.1.1) and requests per operation
	// (429 ThrottlingException). The zero value enforces none.
	Account AccountLimits
	// Broker attaches the provisioning service as a client to an existing
	// MQTT 5 broker instead of embedding one: mqtts://HOST:PORT (mutual
	// TLS) or mqtt://HOST:PORT. One device at a time: see
	// docs/cloud-emulator.md.
	Broker string
	// ConnectTimeout bounds how long a new connection may take to finish
	// the TLS handshake and send CONNECT before it is closed; 0 uses
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// BrokerTLS overrides the TLS settings for an mqtts:// Broker; nil
	// trusts the emulator CA and presents a service certificate the
	// emulator CA issues at start.
	BrokerTLS *tls.Config
}

// Server is a running (or ready to run) emulator.
type Server struct {
	dir      string
	lock     *os.File // held from Start to Close (lockDir)
	listen   string
	log      *slog.Logger
	now      func() time.Time
	lifetime time.Duration
	st       settings
	ca       *authority
	auth     Authorizer
	faults   *faultSet
	limiter  *limiter
	account  *accountLimiter

	connectTimeout time.Duration

	strictDelivery  bool
	singleUseTokens bool

	brokerURL string
	brokerTLS *tls.Config
	attached  *attachment // broker mode only

	templates  map[string]*Template
	policies   map[string]bool    // policies on disk, by name
	policyDocs map[string]*Policy // the same, parsed
	inlineMu   sync.Mutex
	inline     map[string]inlinePolicy // parsed registry policies; guarded by inlineMu

	claimPolicies []string // Options.ClaimPolicies

	// mu guards reg: changes (commit) hold it for writing, lookups
	// (CONNECT, policy checks) for reading. Entities in reg are replaced,
	// never modified, so one read under mu stays valid after.
	mu       sync.RWMutex
	reg      *Registry
	pendingQ []pendingRef // pending certificates, oldest first
	regLog   *regLog      // nil until Start
	saveErr  error        // set when a change could not be made durable

	// Background compaction folds the log into a new snapshot once it
	// outgrows the snapshot, so that a start after a SIGKILL replays a
	// bounded log. compacting and compactOff are guarded by mu.
	compactAt  int64 // log size that starts one; 0: the snapshot's size, at least minCompactAt
	snapSize   int64 // size of the last snapshot written or read; guarded by mu
	compacting bool
	compactOff bool // a compaction failed: the log grows until the next start
	compactWG  sync.WaitGroup
	// compactions counts background compactions done, for tests.
	compactions atomic.Int64
	// afterRotate, for tests, runs in a compaction between the log's
	// rotation and the new snapshot.
	afterRotate func()

	regChanged bool            // the claim policies changed the registry at open
	loadedFrom registryFileIDs // the registry files reg was read from

	broker   *mqtt.Server
	listener *guardedListener

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
	s := &Server{dir: dir, log: opts.Logger, now: opts.Now, closing: make(chan struct{}), auth: opts.Authorizer,
		strictDelivery: opts.StrictDelivery, singleUseTokens: opts.SingleUseTokens, limiter: newLimiter(opts.RateLimit), account: newAccountLimiter(opts.Account),
		brokerURL: opts.Broker, brokerTLS: opts.BrokerTLS, connectTimeout: opts.ConnectTimeout}
	if s.connectTimeout <= 0 {
		s.connectTimeout = DefaultConnectTimeout
	}
	if opts.Broker != "" {
		if err := checkBrokerOptions(opts); err != nil {
			return nil, err
		}
	}
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
		s.auth = DefaultAuthorizer{Region: s.st.Region, AccountID: s.st.AccountID}
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
	if err := s.loadTemplates(); err != nil {
		return nil, err
	}
	if err := s.loadPolicies(); err != nil {
		return nil, err
	}
	s.claimPolicies = opts.ClaimPolicies
	if err := s.loadRegistry(); err != nil {
		return nil, err
	}
	return s, nil
}

// loadRegistry reads the registry and sets the claim certificate's
// policies in it. Start does it again once the directory is locked.
func (s *Server) loadRegistry() error {
	before := registryFiles(s.dir)
	if s.reg != nil && before.same(s.loadedFrom) {
		// Nothing changed the registry since Open read it: reading it
		// again would double the start's cost at fleet scale.
		return nil
	}
	reg, err := ReadRegistry(s.dir)
	if err != nil {
		return err
	}
	s.reg = reg
	s.loadedFrom = registryFileIDs{}
	if after := registryFiles(s.dir); after.same(before) {
		s.loadedFrom = after
	}
	changed, err := s.applyClaimPolicies(s.claimPolicies)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(s.dir, fileSettings), err)
	}
	s.regChanged = changed
	return nil
}

// openRegistry, with the directory locked, reads the registry afresh
// (unless Open's read is still current), deletes expired pending
// certificates, folds the log into a new snapshot where it must, and opens
// the log for this run's changes.
func (s *Server) openRegistry() error {
	if err := s.loadRegistry(); err != nil {
		return err
	}
	tx := newTx(s.reg)
	now := s.now()
	for _, c := range s.reg.SortedCertificates() {
		if c.Status != StatusPendingActivation || c.Claim {
			continue
		}
		if now.Sub(c.CreatedAt) > s.lifetime {
			tx.deleteCert(c.ID)
		} else {
			s.pendingQ = append(s.pendingQ, pendingRef{id: c.ID, created: c.CreatedAt})
		}
	}
	tx.apply()
	slices.SortFunc(s.pendingQ, func(a, b pendingRef) int { return a.created.Compare(b.created) })
	// Fold the log into a new snapshot here only when the start changed
	// the registry, or the files are not a snapshot and the log of its
	// generation (a crash in the middle of a compaction, a log the
	// snapshot already holds, an earlier version's format). A log a crash
	// left is otherwise appended to, and folded in the background once it
	// outgrows the snapshot: a start after a SIGKILL only reads.
	end := s.reg.logEnd
	if s.regChanged || !tx.empty() || s.reg.legacy || end < 0 || fileExists(filepath.Join(s.dir, fileRegistryLogPrev)) {
		if err := compact(s.dir, s.reg); err != nil {
			return err
		}
		end = -1
	}
	if fi, err := os.Stat(filepath.Join(s.dir, fileRegistry)); err == nil {
		s.snapSize = fi.Size()
	}
	l, err := openRegLog(s.dir, end)
	if err != nil {
		return err
	}
	s.regLog = l
	return nil
}

func (s *Server) loadTemplates() error {
	s.templates = map[string]*Template{}
	paths, err := filepath.Glob(filepath.Join(s.dir, dirTemplates, "*.json"))
	if err != nil {
		return fmt.Errorf("list templates: %w", err)
	}
	for _, p := range paths {
		// Also reads NAME.yaml (enabled, pre-provisioning hook); see settings.go.
		t, err := s.loadTemplate(p)
		if err != nil {
			return err
		}
		s.templates[t.Name] = t
	}
	return nil
}

// Start binds the listen address and serves; it returns once connections
// are accepted. With Options.Broker it instead connects to that broker and
// returns once subscribed to the request topics.
func (s *Server) Start() (err error) {
	// One process serves a directory: a second would keep a registry of
	// its own and overwrite the first's.
	lock, err := lockDir(s.dir)
	if err != nil {
		return err
	}
	s.lock = lock
	defer func() {
		if err != nil {
			if s.regLog != nil {
				_ = s.regLog.close()
				s.regLog = nil
			}
			_ = lock.Close()
			s.lock = nil
		}
	}()
	if err := s.openRegistry(); err != nil {
		return err
	}
	if s.brokerURL != "" {
		return s.attach()
	}
	serverCert, err := tls.LoadX509KeyPair(filepath.Join(s.dir, fileServerCert), filepath.Join(s.dir, fileServerKey))
	if err != nil {
		return fmt.Errorf("load server certificate: %w", err)
	}
	chains := newClientChains(s.ca.pool)
	tlsConf := &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		// The chain is verified in VerifyConnection, against the same CA
		// and with the same options crypto/tls would use, but remembering
		// the claim certificate every device presents (clientchain.go).
		// ClientCAs still names the CA in the CertificateRequest.
		ClientAuth: tls.RequireAnyClientCert,
		ClientCAs:  s.ca.pool,
		MinVersion: tls.VersionTLS12,
		// AWS IoT authenticates only ACTIVE certificates: a pending,
		// inactive or revoked one is refused in the handshake, before any
		// MQTT. A device relies on that to learn whether a registration
		// whose answer it lost activated its certificate.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := chains.verify(cs.PeerCertificates, time.Now()); err != nil {
				return err
			}
			return s.refuseInactive(cs)
		},
		// The key exchanges AWS IoT negotiates. Go's default would pick
		// the hybrid X25519 + ML-KEM share a Go device offers, which AWS
		// IoT does not take and which costs serve about 5% more CPU per
		// device at fleet scale.
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
	}
	caps := mqtt.NewDefaultServerCapabilities()
	// mochi copies a publish's user properties into its PUBACK unless
	// told not to; AWS IoT documents no such echo, and a PUBACK with
	// properties is where strict clients met mochi's 0x01 success code
	// (see replycodes.go).
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	// The listener refuses a larger packet first, with the DISCONNECT
	// MQTT 5 asks for; mochi's own check, made before it allocates the
	// packet, is the backstop.
	caps.MaximumPacketSize = MaxPacketSize
	// mochi's default queue of 8,192 pending writes per client is a 64 KiB
	// allocation per connection, most of serve's garbage when a fleet
	// connects. AWS IoT sends a connection at most 100 publishes a second;
	// a client that falls 1,024 behind loses publishes, as it would there.
	caps.MaximumClientWritesPending = 1024
	broker := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       slog.New(brokerLogHandler{next: s.log.Handler()}).With("component", "mqtt"),
		// AWS IoT has no $SYS tree; publishing it hourly keeps the log quiet.
		SysTopicResendInterval: 3600,
	})
	// Set before the listener exists: OnConnect needs it for CONNACK.
	s.broker = broker
	if err := broker.AddHook(&hook{s: s}, nil); err != nil {
		return fmt.Errorf("add broker hook: %w", err)
	}
	l := newGuardedListener(s, listeners.NewTCP(listeners.Config{ID: "aws-iot", Address: s.listen, TLSConfig: tlsConf}), s.connectTimeout)
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
// with port 0); attached to a broker, the broker's URL.
func (s *Server) Addr() string {
	if s.brokerURL != "" {
		return s.brokerURL
	}
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
			s.closeClients()
			err = s.broker.Close()
		}
		if s.attached != nil {
			err = s.attached.close()
		}
		// No request is left to start another compaction.
		s.compactWG.Wait()
		if s.regLog != nil {
			if cerr := s.regLog.close(); err == nil {
				err = cerr
			}
			// Every request has ended: fold the log into a snapshot now,
			// so the next start reads one file instead of replaying.
			appended, _ := s.regLog.counts()
			s.mu.RLock()
			if appended > 0 && s.saveErr == nil {
				if cerr := compact(s.dir, s.reg); cerr != nil && err == nil {
					err = cerr
				}
			}
			s.mu.RUnlock()
		}
		if s.lock != nil {
			_ = s.lock.Close()
		}
	})
	return err
}

// closeClients stops accepting and ends every connection before mochi's
// own shutdown. mochi 2.7.9 closes a listener's clients while holding a
// read lock on its client map and taking it again (GetByListener calls
// Len); a client disconnecting at that moment waits for the write lock in
// between, and Close hangs for good. Closing the listener first with a
// no-op callback makes mochi skip that step.
func (s *Server) closeClients() {
	if s.listener != nil {
		s.listener.Close(func(string) {})
	}
	for _, cl := range s.broker.Clients.GetAll() {
		switch {
		case cl.Net.Inline:
		case cl.Properties.ProtocolVersion == 5:
			_ = s.broker.DisconnectClient(cl, packets.ErrServerShuttingDown)
		default: // MQTT 3.1.1 has no server DISCONNECT: just close
			cl.Stop(packets.ErrServerShuttingDown)
		}
	}
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
// the registry knows it at the moment of the check.
type Principal struct {
	CertificateID string
	Claim         bool
	Status        string // ACTIVE, INACTIVE, ...; "UNKNOWN" if not in the registry
	ClientID      string // MQTT client id of the connection
	// The thing attached to the certificate, if exactly one; "" otherwise.
	ThingName       string
	ThingTypeName   string
	ThingAttributes map[string]string
	// Policies attached to the certificate; empty unless it is ACTIVE.
	Policies []*Policy
}

// Action is an IoT policy action the broker asks about.
type Action string

// The MQTT actions of AWS IoT policies.
const (
	ActionConnect   Action = "iot:Connect"
	ActionPublish   Action = "iot:Publish"
	ActionSubscribe Action = "iot:Subscribe"
	ActionReceive   Action = "iot:Receive"
)

// Authorizer decides whether a principal may act on a resource: the client
// id for ActionConnect, the topic filter for ActionSubscribe, the topic
// otherwise. It is an interface so tests can substitute a rule of their
// own without touching the broker glue.
type Authorizer interface {
	Authorize(p Principal, action Action, resource string) bool
}

// DefaultAuthorizer evaluates the IoT policies attached to the principal's
// certificate, as AWS IoT Core does: ARNs built with the emulator's region
// and account, explicit Deny over Allow, default deny.
type DefaultAuthorizer struct {
	Region    string // "" means the emulator's default, us-east-1
	AccountID string // "" means the emulator's default, 123456789012
}

// Authorize implements Authorizer.
func (a DefaultAuthorizer) Authorize(p Principal, action Action, resource string) bool {
	if p.Status != StatusActive {
		return false
	}
	region, account := a.Region, a.AccountID
	if region == "" {
		region = defaultRegion
	}
	if account == "" {
		account = defaultAccountID
	}
	return Evaluate(p.Policies, p, action, ResourceARN(region, account, action, resource)) == Allowed
}

// authorize asks the Authorizer about a connected client, describing it
// from the registry as it is now.
func (s *Server) authorize(cl *mqtt.Client, action Action, resource string) bool {
	v, ok := s.principals.Load(cl)
	if !ok {
		return false
	}
	return s.authorizeCert(v.(Principal).CertificateID, cl.ID, action, resource)
}

// authorizeCert is authorize for a certificate and client id, for a
// connection that may already be gone (an answer to a resumable session).
func (s *Server) authorizeCert(certID, clientID string, action Action, resource string) bool {
	s.mu.RLock()
	p := s.principalLocked(certID, clientID)
	s.mu.RUnlock()
	if !s.auth.Authorize(p, action, resource) {
		s.log.Warn("not authorized", "client", clientID, "certificateId", certID, "action", string(action), "resource", resource)
		return false
	}
	return true
}

var errNoClientCertificate = errors.New("no client certificate")

// refuseInactive fails a TLS handshake whose client certificate the
// registry does not hold as ACTIVE (crypto/tls then sends the client a
// bad_certificate alert). It runs for resumed sessions too, so a
// certificate deactivated since its last connection is refused.
func (s *Server) refuseInactive(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errNoClientCertificate
	}
	id := CertificateID(cs.PeerCertificates[0].Raw)
	s.mu.RLock()
	status := "UNKNOWN"
	if c, ok := s.reg.Certificates[id]; ok {
		status = c.Status
	}
	s.mu.RUnlock()
	if status != StatusActive {
		s.log.Warn("connection refused", "certificateId", id, "status", status, "reason", "certificate not ACTIVE")
		return fmt.Errorf("certificate %s is %s", id, status)
	}
	return nil
}

// policyNames lists policies for a log line: which ones refused.
func policyNames(ps []*Policy) string {
	names := make([]string, 0, len(ps))
	for _, p := range ps {
		if p != nil {
			names = append(names, p.Name)
		}
	}
	return strings.Join(names, ",")
}

// certificateOf returns the client certificate of a TLS connection.
func certificateOf(cl *mqtt.Client) (*x509.Certificate, error) {
	c := cl.Net.Conn
	if gc, ok := c.(*guardedConn); ok {
		c = gc.Conn
	}
	conn, ok := c.(*tls.Conn)
	if !ok {
		return nil, errors.New("connection is not TLS")
	}
	state := conn.ConnectionState()
	if len(state.PeerCertificates) == 0 {
		return nil, errNoClientCertificate
	}
	return state.PeerCertificates[0], nil
}

// hook is the glue between mochi and the emulator.
type hook struct {
	mqtt.HookBase
	s *Server
	// subscribing holds, per client, the filters of the SUBSCRIBE being
	// processed: mochi asks OnACLCheck(write=false) both for a filter and
	// for a delivery, and only this tells iot:Subscribe from iot:Receive.
	subscribing sync.Map // *mqtt.Client -> *pendingFilters
}

func (h *hook) ID() string { return "cloudsim" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnDisconnect,
		mqtt.OnPublish, mqtt.OnPublished, mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnPacketEncode:
		return true
	}
	return false
}

// OnConnect admits only the claim certificate and ACTIVE device
// certificates. The TLS layer already refused certificates the CA did not
// sign and those not ACTIVE (refuseInactive); one deactivated between the
// handshake and CONNECT gets CONNACK "not authorized" here.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	s := h.s
	if !s.account.allowConnect(cl.ID, s.now()) {
		s.log.Info("connection throttled", "client", cl.ID, "remote", cl.Net.Remote)
		_ = s.broker.SendConnack(cl, packets.ErrConnectionRateExceeded, false, nil)
		return packets.ErrConnectionRateExceeded
	}
	cert, err := certificateOf(cl)
	if err != nil {
		s.log.Warn("connection refused", "client", cl.ID, "remote", cl.Net.Remote, "reason", err.Error())
		_ = s.broker.SendConnack(cl, packets.ErrNotAuthorized, false, nil)
		return packets.ErrNotAuthorized
	}
	id := CertificateID(cert.Raw)
	s.mu.RLock()
	p := s.principalLocked(id, cl.ID)
	s.mu.RUnlock()
	if p.Status != StatusActive {
		s.log.Warn("connection refused", "client", cl.ID, "remote", cl.Net.Remote, "certificateId", id, "status", p.Status)
		_ = s.broker.SendConnack(cl, packets.ErrNotAuthorized, false, nil)
		return packets.ErrNotAuthorized
	}
	// iot:Connect on client/ID: a device policy such as Greengrass's
	// admits only client ids that start with the thing name.
	if !s.auth.Authorize(p, ActionConnect, cl.ID) {
		s.log.Warn("connection refused", "client", cl.ID, "remote", cl.Net.Remote, "certificateId", id, "policies", policyNames(p.Policies), "reason", "iot:Connect not allowed by the certificate's policies")
		_ = s.broker.SendConnack(cl, packets.ErrNotAuthorized, false, nil)
		return packets.ErrNotAuthorized
	}
	// Only what identifies the connection is kept; the rest is read from
	// the registry at every check.
	s.principals.Store(cl, Principal{CertificateID: id, Claim: p.Claim, ThingName: p.ThingName, ClientID: cl.ID})
	admitted(cl)
	if p.Claim {
		s.log.Debug("client connected", "client", cl.ID, "remote", cl.Net.Remote, "certificateId", id, "claim", true)
	} else {
		// A device on its own certificate: what its operator checks
		// (the client id its policy allowed, the thing it connected as).
		s.log.Info("device connected", "client", cl.ID, "thing", p.ThingName, "remote", cl.Net.Remote, "certificateId", id)
	}
	return nil
}

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	_, ok := h.s.principals.Load(cl)
	return ok
}

func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.s.principals.Delete(cl)
	h.subscribing.Delete(cl)
	h.s.limiter.forget(cl)
}

// OnACLCheck asks the Authorizer. mochi calls it with write=true for a
// publish, and write=false both for a subscribe filter and for a delivery to
// a subscriber; OnSubscribe marks the filters so the two can be told apart.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	action := ActionReceive
	switch {
	case write:
		action = ActionPublish
	case h.takeSubscribing(cl, topic):
		action = ActionSubscribe
	}
	allowed := h.s.authorize(cl, action, topic)
	if !allowed && write && cl.Properties.ProtocolVersion < 5 {
		// MQTT 3.1.1 has no way to refuse a publish, so AWS IoT
		// closes the connection. mochi does so for QoS 1 and 2 but
		// silently drops a QoS 0 publish; closing here covers both,
		// before mochi writes a DISCONNECT, which 3.1.1 servers may
		// not send.
		cl.Stop(packets.ErrNotAuthorized)
	}
	return allowed
}

// pendingFilters counts the filters of a SUBSCRIBE not yet checked.
type pendingFilters struct {
	mu      sync.Mutex
	filters map[string]int
}

// OnSubscribe marks the packet's filters as being subscribed, for
// OnACLCheck. A delivery to this client on a topic spelled exactly as one of
// them, racing the SUBSCRIBE, could take the mark: it would then be checked
// as iot:Subscribe and the filter as iot:Receive, a window of microseconds
// that only a policy granting one and not the other could notice.
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	pf := &pendingFilters{filters: map[string]int{}}
	for _, f := range pk.Filters {
		pf.filters[f.Filter]++
	}
	h.subscribing.Store(cl, pf)
	return pk
}

// OnSubscribed clears marks left by filters mochi refused before asking.
func (h *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	h.subscribing.Delete(cl)
}

func (h *hook) takeSubscribing(cl *mqtt.Client, filter string) bool {
	v, ok := h.subscribing.Load(cl)
	if !ok {
		return false
	}
	pf := v.(*pendingFilters)
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if pf.filters[filter] == 0 {
		return false
	}
	pf.filters[filter]--
	return true
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
	// Off the client's read loop: a delay fault must not stop the broker
	// from reading (and answering PINGREQ on) that connection.
	s.dispatch(func() {
		s.handle(&mochiResponder{s: s, cl: cl, p: principal, qos: pk.FixedHeader.Qos}, principal, req, payload)
	})
}

// deliver writes an answer to one connection only, whether or not it
// subscribed, as AWS IoT does (with StrictDelivery, only if it
// subscribed). The QoS is the client's subscription QoS when it has one,
// else the request's, at most 1.
func (s *Server) deliver(cl *mqtt.Client, p Principal, topic string, payload []byte, reqQoS byte) {
	cl = s.sessionOf(cl, p)
	// AWS drops, silently, a message the receiver's policy does not allow
	// it to receive, answers included.
	if !s.authorizeCert(p.CertificateID, cl.ID, ActionReceive, topic) {
		s.log.Info("answer not delivered: iot:Receive not allowed", "client", cl.ID, "topic", topic)
		return
	}
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
	if !subscribed && s.strictDelivery {
		s.log.Info("answer not delivered: requester is not subscribed to the response topic (strict delivery)", "client", cl.ID, "topic", topic)
		return
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

// sessionOf returns the connection an answer for cl should go to. A device
// with a persistent session that reconnected while its request was being
// handled is the same requester on a new connection: the answer goes there,
// under the same certificate only. If it has not reconnected yet, cl is
// kept: a QoS 1 answer then waits in the session's in-flight queue, which
// mochi hands to the next connection of that session.
func (s *Server) sessionOf(cl *mqtt.Client, p Principal) *mqtt.Client {
	if !cl.Closed() || s.broker == nil {
		return cl
	}
	persistent := (cl.Properties.ProtocolVersion < 5 && !cl.Properties.Clean) ||
		(cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval > 0)
	if !persistent {
		return cl
	}
	cur, ok := s.broker.Clients.Get(cl.ID)
	if !ok || cur == cl || cur.Closed() {
		return cl
	}
	if now, _ := s.principals.Load(cur); now == nil || now.(Principal).CertificateID != p.CertificateID {
		return cl
	}
	return cur
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

// dispatch runs one request's handling on its own goroutine, tracked so
// that Close waits for it; after Close it drops the request.
func (s *Server) dispatch(fn func()) {
	s.workMu.Lock()
	defer s.workMu.Unlock()
	if s.closed {
		return
	}
	s.work.Add(1)
	go func() {
		defer s.work.Done()
		fn()
	}()
}

// registryFileIDs tells apart versions of the registry files: both are
// only ever replaced by rename (another file) or appended to (a new size
// and modification time).
type registryFileIDs struct {
	snap, log os.FileInfo // nil when missing
	valid     bool        // both stat'ed, the snapshot found
}

func registryFiles(dir string) registryFileIDs {
	snap, serr := os.Stat(filepath.Join(dir, fileRegistry))
	log, lerr := os.Stat(filepath.Join(dir, fileRegistryLog))
	if errors.Is(lerr, os.ErrNotExist) {
		log, lerr = nil, nil
	}
	return registryFileIDs{snap: snap, log: log, valid: serr == nil && lerr == nil}
}

// same reports whether f and g are the same versions of the same files.
func (f registryFileIDs) same(g registryFileIDs) bool {
	sameFile := func(a, b os.FileInfo) bool {
		if a == nil || b == nil {
			return a == nil && b == nil
		}
		return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
	}
	return f.valid && g.valid && sameFile(f.snap, g.snap) && sameFile(f.log, g.log)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
