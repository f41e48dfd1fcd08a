package iotclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"github.com/fleetprov/fleetprov/internal/syncbuf"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// --- certificates -----------------------------------------------------------

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial int64 = 1
var serialMu sync.Mutex

func nextSerial() *big.Int {
	serialMu.Lock()
	defer serialMu.Unlock()
	serial++
	return big.NewInt(serial)
}

func newCA(t testing.TB, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf certificate and its PKCS#8 key, both PEM: a
// server certificate for hosts (names or IP addresses) if any are given,
// else a client certificate.
func (ca *testCA) issue(t testing.TB, cn string, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(hosts) > 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})
}

// pki is one test world: the server's CA (the device's root CA), the claim
// CA the broker trusts, and files for the device side.
type pki struct {
	serverCA, claimCA     *testCA
	serverCert, serverKey []byte
	claimCert, claimKey   []byte
	dir                   string
	claimCertPath         string
	claimKeyPath          string
	rootCAPath            string
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	p := &pki{serverCA: newCA(t, "test server CA"), claimCA: newCA(t, "test claim CA"), dir: t.TempDir()}
	p.serverCert, p.serverKey = p.serverCA.issue(t, "localhost", "localhost", "127.0.0.1")
	p.claimCert, p.claimKey = p.claimCA.issue(t, "claim")
	p.claimCertPath = p.write(t, "claim.pem.crt", p.claimCert)
	p.claimKeyPath = p.write(t, "claim.pem.key", p.claimKey)
	p.rootCAPath = p.write(t, "root-ca.pem", p.serverCA.pem)
	return p
}

func (p *pki) write(t testing.TB, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (p *pki) serverTLS(t testing.TB) *tls.Config {
	t.Helper()
	cert, err := tls.X509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.claimCA.cert)
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
}

// --- broker and the AWS side --------------------------------------------------

// recorder is a mochi hook that notes, in order, what device clients did.
type recorder struct {
	mqtt.HookBase
	mu     sync.Mutex
	events []string
}

func (r *recorder) ID() string { return "test-recorder" }

func (r *recorder) Provides(b byte) bool {
	return b == mqtt.OnSubscribed || b == mqtt.OnPublish || b == mqtt.OnPacketRead || b == mqtt.OnSessionEstablished
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if !cl.Net.Inline {
		r.add("connect")
	}
}

func (r *recorder) OnSubscribed(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if cl.Net.Inline {
		return
	}
	for _, f := range pk.Filters {
		r.add(fmt.Sprintf("subscribe %s qos%d", f.Filter, f.Qos))
	}
}

func (r *recorder) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !cl.Net.Inline {
		r.add(fmt.Sprintf("publish %s qos%d", pk.TopicName, pk.FixedHeader.Qos))
	}
	return pk, nil
}

func (r *recorder) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !cl.Net.Inline && pk.FixedHeader.Type == packets.Disconnect {
		r.add("disconnect")
	}
	return pk, nil
}

func (r *recorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// request is what the fake AWS side received.
type request struct {
	topic   string
	payload []byte
}

// reply decides the answer to one request: the suffix "accepted" or
// "rejected" and the payload; answer=false stays silent.
type reply func(req request) (suffix string, payload []byte, answer bool)

// fakeAWS plays AWS IoT's fleet provisioning side through inline
// subscriptions on the request topics.
type fakeAWS struct {
	srv      *mqtt.Server
	addr     string
	rec      *recorder
	mu       sync.Mutex
	requests []request
	reply    reply
}

func (f *fakeAWS) setReply(r reply) {
	f.mu.Lock()
	f.reply = r
	f.mu.Unlock()
}

func (f *fakeAWS) received() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.requests...)
}

func startBroker(t testing.TB, tlsCfg *tls.Config) *fakeAWS {
	t.Helper()
	return startBrokerOn(t, "127.0.0.1:0", tlsCfg)
}

// startBrokerOn is startBroker listening on addr.
func startBrokerOn(t testing.TB, addr string, tlsCfg *tls.Config) *fakeAWS {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	f := &fakeAWS{srv: srv, rec: &recorder{}}
	if err := srv.AddHook(f.rec, nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "tls", Address: addr, TLSConfig: tlsCfg})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	f.addr = l.Address()
	handler := func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		req := request{topic: pk.TopicName, payload: append([]byte(nil), pk.Payload...)}
		f.mu.Lock()
		f.requests = append(f.requests, req)
		r := f.reply
		f.mu.Unlock()
		if r == nil {
			return
		}
		suffix, payload, ok := r(req)
		if !ok {
			return
		}
		// Answer outside the publishing client's read loop.
		go func() { _ = srv.Publish(req.topic+"/"+suffix, payload, false, 1) }()
	}
	for i, filter := range []string{
		"$aws/certificates/create-from-csr/json", "$aws/provisioning-templates/+/provision/json",
		"$aws/certificates/create-from-csr/cbor", "$aws/provisioning-templates/+/provision/cbor",
		"$aws/certificates/create/json", "$aws/certificates/create/cbor",
	} {
		if err := srv.Subscribe(filter, i+1, handler); err != nil {
			t.Fatal(err)
		}
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Close() })
	return f
}

// --- logs ---------------------------------------------------------------------

func debugLogger() (*slog.Logger, *syncbuf.Buffer) {
	buf := &syncbuf.Buffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// --- the device side ------------------------------------------------------------

func (p *pki) options(endpoint string, logger *slog.Logger) Options {
	return Options{
		Endpoint:       endpoint,
		ClaimCertPath:  p.claimCertPath,
		ClaimKeyPath:   p.claimKeyPath,
		RootCAPath:     p.rootCAPath,
		ConnectTimeout: 5 * time.Second,
		Logger:         logger,
	}
}

// jsonishKeys lists the quoted keys of a docs payload shape, in order.
func jsonishKeys(t *testing.T, name string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, `"`) {
			continue
		}
		end := strings.Index(line[1:], `"`)
		if end < 0 || !strings.HasPrefix(line[end+2:], ":") {
			continue
		}
		k := line[1 : end+1]
		if k == "string" { // the docs' placeholder for a map's keys
			continue
		}
		keys = append(keys, k)
	}
	return keys
}

// deviceFixture is a device key with its CSR and a certificate for it.
type deviceFixture struct {
	key     *ecdsa.PrivateKey
	keyPEM  string
	csrPEM  string
	ca      *x509.Certificate
	caKey   *ecdsa.PrivateKey
	certPEM string
	certID  string
}

func newDeviceFixture() *deviceFixture {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	f := &deviceFixture{}
	var err error
	f.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	kd, err := x509.MarshalPKCS8PrivateKey(f.key)
	must(err)
	f.keyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}))
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "aws-greengrass-nucleus-lite"}}, f.key)
	must(err)
	f.csrPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))
	f.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuing CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &f.caKey.PublicKey, f.caKey)
	must(err)
	f.ca, err = x509.ParseCertificate(caDER)
	must(err)
	f.certPEM, f.certID = f.issue(&f.key.PublicKey, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	return f
}

// issue makes a certificate for pub valid from nb to na, and its id.
func (f *deviceFixture) issue(pub any, nb, na time.Time) (certPEM, id string) {
	tmpl := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: "device"},
		NotBefore: nb, NotAfter: na, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.ca, pub, f.caKey)
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(der)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), hex.EncodeToString(sum[:])
}
