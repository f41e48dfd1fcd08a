package cloudsim

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/fleetprov/fleetprov/internal/syncbuf"
)

// dialWithID is dial with a chosen MQTT client id: device policies decide
// iot:Connect on it. (Kept here rather than in helpers_test.go so policy
// tests do not edit the shared helper.)
func (e *env) dialWithID(t *testing.T, cert tls.Certificate, clientID string) (*client, error) {
	t.Helper()
	d := &net.Dialer{Timeout: waitLimit}
	conn, err := tls.DialWithDialer(d, "tcp", e.address(), e.tlsConfig(t, cert))
	if err != nil {
		return nil, err
	}
	return connectClient(t, conn, clientID)
}

// connectClient speaks MQTT 5 over an established connection, recording
// every message it receives; the connection is closed if CONNECT fails.
func connectClient(t *testing.T, conn net.Conn, clientID string) (*client, error) {
	c := &client{t: t, msgs: make(chan *paho.Publish, 16), down: make(chan struct{})}
	var downOnce sync.Once
	c.pc = paho.NewClient(paho.ClientConfig{
		// A connection lost ends every wait for an answer at once.
		OnClientError:      func(error) { downOnce.Do(func() { close(c.down) }) },
		OnServerDisconnect: func(*paho.Disconnect) { downOnce.Do(func() { close(c.down) }) },
		Conn:               packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.mu.Lock()
			c.seen = append(c.seen, pr.Packet.Topic)
			c.mu.Unlock()
			c.msgs <- pr.Packet
			return true, nil
		}},
		PacketTimeout: waitLimit,
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := c.pc.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}); err != nil {
		_ = conn.Close()
		return nil, err
	}
	t.Cleanup(func() { _ = c.pc.Disconnect(&paho.Disconnect{}) })
	return c, nil
}

// clientIDFor is the thing name of a registered device certificate, else a
// random id.
func (e *env) clientIDFor(cert tls.Certificate) string {
	if len(cert.Certificate) > 0 {
		e.srv.mu.RLock()
		defer e.srv.mu.RUnlock()
		if c, ok := e.srv.reg.Certificates[CertificateID(cert.Certificate[0])]; ok && c.ThingName != "" {
			return c.ThingName
		}
	}
	return randomID()
}

// wantRefused asserts a QoS 1 publish got PUBACK 0x87 (not authorized).
func wantRefused(t *testing.T, c *client, topic string) {
	t.Helper()
	resp, err := c.publish(topic, []byte("{}"))
	if err == nil || resp == nil || resp.ReasonCode != 0x87 {
		t.Errorf("publish %s: resp %+v err %v, want PUBACK 0x87 not authorized", topic, resp, err)
	}
}

func wantAccepted(t *testing.T, c *client, topic string) {
	t.Helper()
	if resp, err := c.publish(topic, []byte("{}")); err != nil || resp == nil || resp.ReasonCode >= 0x80 {
		t.Errorf("publish %s: resp %+v err %v, want PUBACK success", topic, resp, err)
	}
}

// writePolicy drops a policy document into D/policies before Open.
func writePolicy(t *testing.T, dir, name, doc string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "policies", name+".json"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The default claim policy is Greengrass's: the CSR flow and its template,
// refused elsewhere, and the whole flow still works.
func TestClaimPolicyEnforced(t *testing.T) {
	e := startEnv(t, Options{ClaimPolicies: []string{claimPolicyName}})
	c := e.dialClaim(t)
	wantRefused(t, c, "$aws/provisioning-templates/OtherTemplate/provision/json")
	wantRefused(t, c, "$aws/certificates/create/json")
	wantRefused(t, c, "devices/x/telemetry")
	if err := c.subscribe("$aws/certificates/create/json/accepted"); err == nil {
		t.Error("claim subscribed to CreateKeysAndCertificate answers the Greengrass policy does not allow")
	}
	if err := c.subscribe(topicCSR+"/accepted", topicRegister+"/+"); err != nil {
		t.Errorf("claim subscribe to its answers: %v", err)
	}
	p := createCert(t, c)
	register(t, c, &p, "a1")
	if p.thingName != "gg_a1" {
		t.Errorf("thing %q", p.thingName)
	}
}

// Under the AWS docs' sample claim policy the CSR flow is refused, as AWS
// does, while the CreateKeysAndCertificate topics are open.
func TestDocsClaimPolicyRefusesCSRFlow(t *testing.T) {
	e := startEnv(t, Options{ClaimPolicies: []string{createKeysClaimPolicyName}})
	c := e.dialClaim(t)
	wantRefused(t, c, topicCSR)
	if err := c.subscribe(topicCSR + "/accepted"); err == nil {
		t.Error("subscribe to create-from-csr answers allowed")
	}
	if err := c.subscribe("$aws/certificates/create/json/accepted", "$aws/certificates/create/json/rejected"); err != nil {
		t.Errorf("subscribe to CreateKeysAndCertificate answers: %v", err)
	}
	wantAccepted(t, c, topicRegister)
	reg, _ := ReadRegistry(e.dir)
	if len(reg.Certificates) != 1 {
		t.Errorf("a refused CSR request created a certificate: %d in the registry", len(reg.Certificates))
	}
}

// The embedded C SDK's CSR claim policy, moved to the emulator's region and
// account: the CSR flow works, its template is demo_template, not ours.
func TestEmbeddedCClaimPolicyAllowsCSRFlow(t *testing.T) {
	dir := initDir(t)
	b, err := os.ReadFile(filepath.Join("testdata", "embeddedc-claim-policy-csr.json"))
	if err != nil {
		t.Fatal(err)
	}
	writePolicy(t, dir, "EmbeddedCClaim", strings.NewReplacer("us-west-2", defaultRegion, "012345678901", defaultAccountID).Replace(string(b)))
	e := startEnv(t, Options{Dir: dir, ClaimPolicies: []string{"EmbeddedCClaim"}})
	c := e.dialClaim(t)
	p := createCert(t, c)
	if p.certID == "" {
		t.Fatal("no certificate")
	}
	wantRefused(t, c, topicRegister)
	// Allowed, answered (the template does not exist) and received.
	res, body := c.call("$aws/provisioning-templates/demo_template/provision/json", map[string]any{"certificateOwnershipToken": p.token})
	if res != "rejected" || body["errorCode"] != CodeResourceNotFound {
		t.Errorf("demo_template: %s %v, want rejected ResourceNotFound", res, body)
	}
}

// Greengrass's device policy: client id must start with the thing name.
func TestDevicePolicyConnect(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	p := createCert(t, c)
	register(t, c, &p, "d1")
	dev, err := e.dialWithID(t, p.tlsCert(t), "gg_d1")
	if err != nil {
		t.Fatalf("client id = thing name refused: %v", err)
	}
	wantAccepted(t, dev, "devices/gg_d1/telemetry")
	if _, err := e.dialWithID(t, p.tlsCert(t), "gg_d1-ipc"); err != nil {
		t.Errorf("client id starting with the thing name refused: %v", err)
	}
	_, err = e.dialWithID(t, p.tlsCert(t), "gg_d2")
	if err == nil || !strings.Contains(err.Error(), "not authorized") {
		t.Errorf("another client id: %v, want CONNACK not authorized", err)
	}
	// The claim connects with any client id: its policy says Connect "*".
	if _, err := e.dialWithID(t, e.claimCert(t), "gg_d1-claim"); err != nil {
		t.Errorf("claim refused: %v", err)
	}
}

// A certificate's policies hold only while it is ACTIVE, checked at every
// action, not only at CONNECT.
func TestPoliciesOnlyWhileActive(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	p := createCert(t, c)
	register(t, c, &p, "d2")
	dev, err := e.dialWithID(t, p.tlsCert(t), "gg_d2")
	if err != nil {
		t.Fatal(err)
	}
	setStatus := func(s string) {
		e.setCertStatus(t, p.certID, s)
	}
	setStatus(StatusInactive)
	wantRefused(t, dev, "devices/gg_d2/telemetry")
	setStatus(StatusActive)
	wantAccepted(t, dev, "devices/gg_d2/telemetry")
}

// iot:Receive is checked on delivery: to subscribers, and on the answers
// the emulator writes to the requester.
func TestReceiveChecked(t *testing.T) {
	dir := initDir(t)
	const arn = "arn:aws:iot:us-east-1:123456789012:"
	writePolicy(t, dir, "NoReceive", `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"iot:Connect","Resource":"*"},
		{"Effect":"Allow","Action":["iot:Publish","iot:Subscribe"],"Resource":["`+arn+`topic/*","`+arn+`topicfilter/*"]},
		{"Effect":"Allow","Action":"iot:Receive","Resource":"`+arn+`topic/test/open"}]}`)
	e := startEnv(t, Options{Dir: dir, ClaimPolicies: []string{"NoReceive"}})
	sub := e.dialClaim(t)
	if err := sub.subscribe("test/open", "test/closed"); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	pub := e.dialClaim(t)
	wantAccepted(t, pub, "test/closed")
	wantAccepted(t, pub, "test/open")
	select {
	case m := <-sub.msgs:
		if m.Topic != "test/open" {
			t.Errorf("received %s, which the policy does not allow", m.Topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing received on test/open")
	}
	// No Receive on the answer topics: the request is performed, the answer
	// is not delivered.
	_, _, err := sub.callWait(topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, newKey(t))}, time.Second)
	if err != errNoAnswer {
		t.Errorf("answer without iot:Receive: %v, want none", err)
	}
	reg, _ := ReadRegistry(e.dir)
	if len(reg.Certificates) != 2 {
		t.Errorf("registry has %d certificates, want the claim and the new one", len(reg.Certificates))
	}
}

// A policy a template carries inline is enforced, with its variables.
func TestInlinePolicyEnforced(t *testing.T) {
	dir := initDir(t)
	writePolicy(t, dir, "OpenClaim", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iot:*","Resource":"*"}}`)
	tmpl := `{
  "Parameters": {"SerialNumber": {"Type": "String"}, "AWS::IoT::Certificate::Id": {"Type": "String"}},
  "Resources": {
    "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}},
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::Join": ["", ["inline_", {"Ref": "SerialNumber"}]]}}},
    "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"iot:Connect\",\"Resource\":\"arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}\"},{\"Effect\":\"Allow\",\"Action\":\"iot:Publish\",\"Resource\":\"arn:aws:iot:us-east-1:123456789012:topic/things/${iot:Connection.Thing.ThingName}/*\"}]}"}}
  }
}`
	if err := os.WriteFile(filepath.Join(dir, "templates", "Inline.json"), []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, Options{Dir: dir, ClaimPolicies: []string{"OpenClaim"}})
	c := e.dialClaim(t)
	p := createCert(t, c)
	res, body := c.call("$aws/provisioning-templates/Inline/provision/json", map[string]any{
		"certificateOwnershipToken": p.token, "parameters": map[string]any{"SerialNumber": "7"},
	})
	if res != "accepted" {
		t.Fatalf("RegisterThing %s: %v", res, body)
	}
	if _, err := e.dialWithID(t, p.tlsCert(t), "someone"); err == nil {
		t.Error("inline policy: another client id connected")
	}
	dev, err := e.dialWithID(t, p.tlsCert(t), "inline_7")
	if err != nil {
		t.Fatalf("inline policy: connect as the thing: %v", err)
	}
	wantAccepted(t, dev, "things/inline_7/state")
	wantRefused(t, dev, "things/inline_8/state")
	if err := dev.subscribe("things/inline_7/#"); err == nil {
		t.Error("inline policy grants no Subscribe, yet the subscription was granted")
	}
}

// Tests may substitute their own Authorizer; it sees the principal as the
// registry knows it.
func TestCustomAuthorizer(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	auth := authorizerFunc(func(p Principal, a Action, r string) bool {
		if p.Claim && p.Status == StatusActive && p.ClientID == "custom" {
			mu.Lock()
			seen = append(seen, string(a)+" "+r)
			mu.Unlock()
		}
		return a != ActionPublish || r == "only/this"
	})
	e := startEnv(t, Options{Authorizer: auth})
	c, err := e.dialWithID(t, e.claimCert(t), "custom")
	if err != nil {
		t.Fatal(err)
	}
	wantAccepted(t, c, "only/this")
	wantRefused(t, c, topicCSR)
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"iot:Connect custom", "iot:Publish only/this", "iot:Publish " + topicCSR}; !slices.Equal(seen, want) {
		t.Errorf("authorizer saw %q, want %q", seen, want)
	}
}

type authorizerFunc func(Principal, Action, string) bool

func (f authorizerFunc) Authorize(p Principal, a Action, r string) bool { return f(p, a, r) }

// setCertStatus changes a certificate's status as an operator would, in a
// registry change of its own.
func (e *env) setCertStatus(t *testing.T, id, status string) {
	t.Helper()
	rej := e.srv.commit(func(tx *regTx) *Rejection {
		c, ok := tx.cert(id)
		if !ok {
			t.Fatalf("no certificate %s", id)
		}
		c.Status = status
		return nil
	})
	if rej != nil {
		t.Fatalf("set status of %s: %v", id, rej)
	}
}

// The log shows a device's connection with its client id and thing, and a
// refused one with the policies that refused it: what an operator (or a
// test of fleetprov's Verify step) reads.
func TestDeviceConnectionsLogged(t *testing.T) {
	var logs syncbuf.Buffer
	e := startEnv(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c := e.dialClaim(t)
	p := createCert(t, c)
	register(t, c, &p, "d1")
	if _, err := e.dialWithID(t, p.tlsCert(t), "gg_d1"); err != nil {
		t.Fatalf("client id = thing name refused: %v", err)
	}
	if _, err := e.dialWithID(t, p.tlsCert(t), "gg_d2"); err == nil {
		t.Fatal("another client id let in")
	}
	out := logs.String()
	if !regexp.MustCompile(`level=INFO msg="device connected" client=gg_d1 thing=gg_d1 remote=\S+ certificateId=` + p.certID + `\n`).MatchString(out) {
		t.Errorf("no info line for the device's connection:\n%s", out)
	}
	if !regexp.MustCompile(`level=WARN msg="connection refused" client=gg_d2 remote=\S+ certificateId=` + p.certID + ` policies=GreengrassV2IoTThingPolicy-GreengrassFleetProvisioning,GreengrassV2TokenExchangeRoleAliasPolicy-GreengrassFleetProvisioning reason="iot:Connect not allowed by the certificate's policies"\n`).MatchString(out) {
		t.Errorf("no warning naming the refused client id and its policies:\n%s", out)
	}
	if strings.Contains(out, `msg="device connected" client=gg_d2`) {
		t.Errorf("the refused connection is logged as connected:\n%s", out)
	}
}
