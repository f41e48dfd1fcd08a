package cloudsim

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// The test side speaks the wire format with plain maps and literal topic
// strings: it shares nothing with the emulator's own payload types.
const (
	topicCSR      = "$aws/certificates/create-from-csr/json"
	topicRegister = "$aws/provisioning-templates/GreengrassFleetProvisioningTemplate/provision/json"
)

// waitLimit bounds every wait for an answer the emulator owes. It is
// generous on purpose: a test only waits this long when the emulator failed
// to answer, so a machine busy with other work is slow, not failing.
const waitLimit = 60 * time.Second

// env is one initialised, started emulator.
type env struct {
	dir  string
	srv  *Server
	addr string // where the emulator listens when srv runs in another process
}

func (e *env) address() string {
	if e.srv != nil {
		return e.srv.Addr()
	}
	return e.addr
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

func initDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	addr, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if err := Init(InitOptions{Dir: dir, Listen: addr}); err != nil {
		t.Fatalf("Init: %v", err)
	}
	useTestClaimPolicy(t, dir)
	return dir
}

// testClaimPolicy lets the claim use both certificate flows and any
// template, and nothing else, so tests of other features need not fit the
// Greengrass claim policy; policy tests choose theirs with
// Options.ClaimPolicies.
const testClaimPolicy = `{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
    {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": [
      "arn:aws:iot:us-east-1:123456789012:topic/$aws/certificates/*",
      "arn:aws:iot:us-east-1:123456789012:topic/$aws/provisioning-templates/*/provision/*"]},
    {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [
      "arn:aws:iot:us-east-1:123456789012:topicfilter/$aws/certificates/*",
      "arn:aws:iot:us-east-1:123456789012:topicfilter/$aws/provisioning-templates/*/provision/*"]}
  ]
}
`

// useTestClaimPolicy writes testClaimPolicy as TestClaimPolicy and records
// it in cloud.json as the claim's policy.
func useTestClaimPolicy(t *testing.T, dir string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "policies", "TestClaimPolicy.json"), []byte(testClaimPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "cloud.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	st["claimPolicies"] = []string{"TestClaimPolicy"}
	if b, err = json.Marshal(st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func startEnv(t *testing.T, opts Options) *env {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = initDir(t)
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	srv, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &env{dir: opts.Dir, srv: srv}
}

// client is a real MQTT 5 client over mutual TLS.
type client struct {
	t    *testing.T
	pc   *paho.Client
	msgs chan *paho.Publish
	down chan struct{} // closed when the connection is lost
	mu   sync.Mutex
	seen []string // topics received
}

func (e *env) tlsConfig(t *testing.T, cert tls.Certificate) *tls.Config {
	t.Helper()
	root, err := os.ReadFile(filepath.Join(e.dir, "AmazonRootCA1.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(root) {
		t.Fatal("AmazonRootCA1.pem holds no certificate")
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"}
}

// dial connects with cert and returns the CONNACK error, if any. A device
// certificate connects with its thing's name as client id, as Greengrass
// does: the Greengrass device policy admits no other.
func (e *env) dial(t *testing.T, cert tls.Certificate) (*client, error) {
	t.Helper()
	return e.dialWithID(t, cert, e.clientIDFor(cert))
}

func (e *env) claimCert(t *testing.T) tls.Certificate {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(e.dir, "claim.pem.crt"), filepath.Join(e.dir, "claim.pem.key"))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func (e *env) dialClaim(t *testing.T) *client {
	t.Helper()
	c, err := e.dial(t, e.claimCert(t))
	if err != nil {
		t.Fatalf("claim connect: %v", err)
	}
	return c
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return fmt.Sprintf("test-%x", b)
}

func (c *client) subscribe(filters ...string) error {
	var subs []paho.SubscribeOptions
	for _, f := range filters {
		subs = append(subs, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, err := c.pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
	return err
}

func (c *client) publish(topic string, payload []byte) (*paho.PublishResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if c.down != nil {
		// paho waits out the context for a PUBACK on a lost connection.
		go func() {
			select {
			case <-c.down:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	return c.pc.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
}

// call publishes a request and waits for its answer; it returns "accepted"
// or "rejected" and the decoded body.
func (c *client) call(reqTopic string, body any) (string, map[string]any) {
	c.t.Helper()
	res, payload, err := c.callWait(reqTopic, body, waitLimit)
	if err != nil {
		c.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		c.t.Fatalf("answer on %s is not JSON: %v: %s", res, err, payload)
	}
	return res, m
}

func (c *client) callWait(reqTopic string, body any, wait time.Duration) (string, []byte, error) {
	var payload []byte
	switch b := body.(type) {
	case []byte:
		payload = b
	case string:
		payload = []byte(b)
	default:
		var err error
		if payload, err = json.Marshal(b); err != nil {
			return "", nil, err
		}
	}
	if _, err := c.publish(reqTopic, payload); err != nil {
		return "", nil, fmt.Errorf("publish %s: %w", reqTopic, err)
	}
	select {
	case m := <-c.msgs:
		res, ok := strings.CutPrefix(m.Topic, reqTopic+"/")
		if !ok {
			return "", nil, fmt.Errorf("answer on unexpected topic %s", m.Topic)
		}
		return res, m.Payload, nil
	case <-c.down:
		return "", nil, errConnectionLost
	case <-time.After(wait):
		return "", nil, errNoAnswer
	}
}

var errConnectionLost = fmt.Errorf("connection lost")

var errNoAnswer = fmt.Errorf("no answer")

// csrPEM makes a CSR the way Greengrass nucleus lite does: subject CN only.
func csrPEM(t *testing.T, key crypto.Signer) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "aws-greengrass-nucleus-lite"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// provisioned is what a device holds after the two calls.
type provisioned struct {
	key       *ecdsa.PrivateKey
	certID    string
	certPEM   string
	token     string
	thingName string
	devConf   map[string]any
}

func (p provisioned) tlsCert(t *testing.T) tls.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(p.certPEM))
	if block == nil {
		t.Fatal("certificatePem is not PEM")
	}
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: p.key}
}

func createCert(t *testing.T, c *client) provisioned {
	t.Helper()
	key := newKey(t)
	res, body := c.call(topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, key)})
	if res != "accepted" {
		t.Fatalf("CreateCertificateFromCsr %s: %v", res, body)
	}
	return provisioned{key: key, certID: body["certificateId"].(string), certPEM: body["certificatePem"].(string), token: body["certificateOwnershipToken"].(string)}
}

func register(t *testing.T, c *client, p *provisioned, serial string) {
	t.Helper()
	res, body := c.call(topicRegister, map[string]any{
		"certificateOwnershipToken": p.token,
		"parameters":                map[string]any{"SerialNumber": serial},
	})
	if res != "accepted" {
		t.Fatalf("RegisterThing %s: %v", res, body)
	}
	p.thingName, _ = body["thingName"].(string)
	p.devConf, _ = body["deviceConfiguration"].(map[string]any)
}

// shapeKeys reads the top-level keys of a docs-payload-*.jsonish file (shape
// documents, not strict JSON).
func shapeKeys(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	depth := 0
	re := regexp.MustCompile(`^\s*"([A-Za-z]+)"\s*:`)
	for _, line := range strings.Split(string(b), "\n") {
		if m := re.FindStringSubmatch(line); m != nil && depth == 1 {
			keys = append(keys, m[1])
		}
		depth += strings.Count(line, "{") - strings.Count(line, "}")
	}
	sort.Strings(keys)
	return keys
}

func keysOf(m map[string]any) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
