package cloudsim

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	pahomqtt "github.com/eclipse/paho.mqtt.golang"
)

// The username most AWS device SDKs send: a metrics string, not a user.
const sdkMetricsUsername = "?SDK=Python&Version=1.0"

// client311 is an MQTT 3.1.1 client (paho.mqtt.golang), as the AWS
// embedded-C, Python v1 and FreeRTOS samples are.
type client311 struct {
	t    *testing.T
	mc   pahomqtt.Client
	msgs chan pahomqtt.Message
	lost chan error
}

type opts311 struct {
	clientID string
	clean    bool
}

func (e *env) dial311(t *testing.T, cert tls.Certificate, o opts311) (*client311, bool) {
	t.Helper()
	if o.clientID == "" {
		o.clientID = randomID()
	}
	c := &client311{t: t, msgs: make(chan pahomqtt.Message, 16), lost: make(chan error, 1)}
	opts := pahomqtt.NewClientOptions().
		AddBroker("ssl://" + e.srv.Addr()).
		SetClientID(o.clientID).
		SetUsername(sdkMetricsUsername).
		SetTLSConfig(e.tlsConfig(t, cert)).
		SetProtocolVersion(4).
		SetCleanSession(o.clean).
		SetAutoReconnect(false).
		SetConnectTimeout(waitLimit).
		SetOrderMatters(false).
		// Messages a subscription handler does not claim land here,
		// including answers to a client that never subscribed.
		SetDefaultPublishHandler(func(_ pahomqtt.Client, m pahomqtt.Message) { c.msgs <- m }).
		SetConnectionLostHandler(func(_ pahomqtt.Client, err error) {
			select {
			case c.lost <- err:
			default:
			}
		})
	c.mc = pahomqtt.NewClient(opts)
	tok := c.mc.Connect()
	if !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		t.Fatalf("MQTT 3.1.1 connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.mc.Disconnect(100) })
	return c, tok.(*pahomqtt.ConnectToken).SessionPresent()
}

func (c *client311) subscribe(filters ...string) {
	c.t.Helper()
	m := map[string]byte{}
	for _, f := range filters {
		m[f] = 1
	}
	tok := c.mc.SubscribeMultiple(m, func(_ pahomqtt.Client, msg pahomqtt.Message) { c.msgs <- msg })
	if !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		c.t.Fatalf("subscribe %v: %v", filters, tok.Error())
	}
	for f, code := range tok.(*pahomqtt.SubscribeToken).Result() {
		if code >= 0x80 {
			c.t.Fatalf("subscribe %s refused (0x%02x)", f, code)
		}
	}
}

func (c *client311) publish(topic string, qos byte, payload []byte) {
	c.t.Helper()
	tok := c.mc.Publish(topic, qos, false, payload)
	tok.WaitTimeout(waitLimit)
}

// call publishes a QoS 1 request and waits for the answer on the request
// topic's /accepted or /rejected.
func (c *client311) call(topic string, payload []byte) (string, []byte) {
	c.t.Helper()
	c.publish(topic, 1, payload)
	select {
	case m := <-c.msgs:
		res, ok := strings.CutPrefix(m.Topic(), topic+"/")
		if !ok {
			c.t.Fatalf("answer on unexpected topic %s", m.Topic())
		}
		return res, m.Payload()
	case <-time.After(waitLimit):
		c.t.Fatalf("no answer to %s", topic)
		return "", nil
	}
}

func jsonBody(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A 3.1.1 client with an SDK metrics username, subscribing as the SDK
// samples do, provisions in JSON and in CBOR.
func TestMQTT311ClientProvisions(t *testing.T) {
	e := startEnv(t, Options{})
	c, _ := e.dial311(t, e.claimCert(t), opts311{clean: true})
	for _, f := range []string{"json", "cbor"} {
		csrTopic := "$aws/certificates/create-from-csr/" + f
		regTopic := "$aws/provisioning-templates/GreengrassFleetProvisioningTemplate/provision/" + f
		c.subscribe(csrTopic+"/accepted", csrTopic+"/rejected", regTopic+"/accepted", regTopic+"/rejected")
		codec := testCodec(t, f)
		res, payload := c.call(csrTopic, codec.enc(map[string]any{"certificateSigningRequest": csrPEM(t, newKey(t))}))
		body := codec.dec(payload)
		if res != "accepted" {
			t.Fatalf("%s CreateCertificateFromCsr over 3.1.1: %s %v", f, res, body)
		}
		serial := "31_11_00_00_00_0" + f[:1]
		res, payload = c.call(regTopic, codec.enc(map[string]any{
			"certificateOwnershipToken": body["certificateOwnershipToken"],
			"parameters":                map[string]any{"SerialNumber": serial},
		}))
		if body = codec.dec(payload); res != "accepted" || body["thingName"] != "gg_"+serial {
			t.Fatalf("%s RegisterThing over 3.1.1: %s %v", f, res, body)
		}
	}
}

// Under MQTT 3.1.1 there is no PUBACK reason code, so AWS IoT ends the
// connection on a publish the policy refuses, whatever its QoS.
func TestMQTT311RefusedPublishEndsConnection(t *testing.T) {
	e := startEnv(t, Options{})
	for _, qos := range []byte{0, 1} {
		c, _ := e.dial311(t, e.claimCert(t), opts311{clean: true})
		c.publish("devices/x/telemetry", qos, []byte("{}"))
		select {
		case <-c.lost:
		case <-time.After(waitLimit):
			t.Errorf("QoS %d publish outside the claim's topics: 3.1.1 connection still open", qos)
		}
	}
}

// A device with a persistent session that reconnects keeps getting its
// answers: through the subscription its session kept (checked in strict
// mode, where only subscribers are answered), and when it reconnects while
// its request is still being handled.
func TestMQTT311PersistentSession(t *testing.T) {
	f, _ := ParseFault("RegisterThing:delay=1500ms")
	e := startEnv(t, Options{StrictDelivery: true, Faults: []Fault{f}})
	id := randomID()
	c, _ := e.dial311(t, e.claimCert(t), opts311{clientID: id})
	c.subscribe(topicCSR+"/+", topicRegister+"/+")
	c.mc.Disconnect(100)

	c2, present := e.dial311(t, e.claimCert(t), opts311{clientID: id})
	if !present {
		t.Fatal("persistent session not resumed")
	}
	// No SUBSCRIBE on this connection: the session's subscription counts.
	res, payload := c2.call(topicCSR, jsonBody(t, map[string]any{"certificateSigningRequest": csrPEM(t, newKey(t))}))
	var body map[string]any
	_ = json.Unmarshal(payload, &body)
	if res != "accepted" {
		t.Fatalf("after resuming the session: %s %s", res, payload)
	}

	// The answer is held 1.5 s; the device loses its connection meanwhile
	// and comes back with the same session.
	c2.publish(topicRegister, 1, jsonBody(t, map[string]any{
		"certificateOwnershipToken": body["certificateOwnershipToken"],
		"parameters":                map[string]any{"SerialNumber": "5e_55_10_4e_00_01"},
	}))
	c2.mc.Disconnect(0)
	c3, _ := e.dial311(t, e.claimCert(t), opts311{clientID: id})
	select {
	case m := <-c3.msgs:
		if m.Topic() != topicRegister+"/accepted" || !strings.Contains(string(m.Payload()), "gg_5e_55_10_4e_00_01") {
			t.Errorf("answer after reconnecting: %s %s", m.Topic(), m.Payload())
		}
	case <-time.After(waitLimit):
		t.Fatal("a device that reconnected with its persistent session never got its RegisterThing answer")
	}
}

// An MQTT 5 client with an SDK metrics username and a persistent session
// is served like any other.
func TestMQTT5UsernameAndSession(t *testing.T) {
	e := startEnv(t, Options{StrictDelivery: true})
	id := randomID()
	dial := func() (*client, bool) {
		conn, err := tls.Dial("tcp", e.srv.Addr(), e.tlsConfig(t, e.claimCert(t)))
		if err != nil {
			t.Fatal(err)
		}
		c := &client{t: t, msgs: make(chan *paho.Publish, 16)}
		c.pc = paho.NewClient(paho.ClientConfig{
			Conn: packets.NewThreadSafeConn(conn),
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				c.msgs <- pr.Packet
				return true, nil
			}},
		})
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		ack, err := c.pc.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: false,
			Username: sdkMetricsUsername, UsernameFlag: true,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: ptr(uint32(300))}})
		if err != nil {
			t.Fatalf("MQTT 5 connect with username %q: %v", sdkMetricsUsername, err)
		}
		t.Cleanup(func() { _ = c.pc.Disconnect(&paho.Disconnect{}) })
		return c, ack.SessionPresent
	}
	c, _ := dial()
	if err := c.subscribe(topicCSR + "/+"); err != nil {
		t.Fatal(err)
	}
	_ = c.pc.Disconnect(&paho.Disconnect{})
	c2, present := dial()
	if !present {
		t.Fatal("MQTT 5 session with expiry 300 s not resumed")
	}
	createCert(t, c2) // answered through the session's subscription (strict mode)
}

func ptr[T any](v T) *T { return &v }
