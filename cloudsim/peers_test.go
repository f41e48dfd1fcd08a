package cloudsim

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// Peer conformance: what device clients we did not write send, replayed
// packet by packet with the low-level client (rawmqtt_test.go), with every
// reply code asserted and the connection proven alive after each step.
// Each replay follows what the client was seen doing against the emulator
// and what its public source does; where a client is strict about a code,
// the comment says so, since that is what a regression would break first.

// peerDevice checks what the registry holds once a peer finished: the
// thing, and exactly one ACTIVE certificate attached to it, the one issued
// for the device's key.
func peerDevice(t *testing.T, e *env, thing string, key *ecdsa.PrivateKey, certPEM string) {
	t.Helper()
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		t.Fatalf("certificatePem is not PEM: %q", certPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Fatal("the certificate is not for the device's key")
	}
	reg, err := ReadRegistry(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if reg.Things[thing] == nil {
		t.Fatalf("thing %s not registered; things: %v", thing, keysOfThings(reg))
	}
	var active []string
	for id, c := range reg.Certificates {
		if c.Status == StatusActive && c.ThingName == thing {
			active = append(active, id)
		}
	}
	if len(active) != 1 || active[0] != CertificateID(block.Bytes) {
		t.Errorf("ACTIVE certificates of %s: %v, want only the device's %s", thing, active, CertificateID(block.Bytes))
	}
}

// Greengrass nucleus lite's fleet-provisioning (v2.6.0), through its own
// iotcored and FreeRTOS coreMQTT (MQTT 5 only): clean start, keepalive
// 30 s, a lowercase random UUID as client id, no user name, and one CONNECT
// property, Maximum Packet Size 5000, which coreMQTT adds itself. It never
// subscribes: it publishes at QoS 1 (compact JSON, newlines in the CSR as
// \u000A) and relies on AWS IoT answering the connection that asked. Once
// the answer is in, it unsubscribes from the operation's response filter
// REQUEST/+, which it never subscribed to, around the time its next
// request goes out. coreMQTT checks an UNSUBACK's codes against its SUBACK
// table (0x00-0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2)
// and a PUBACK's against 0x00, 0x10, 0x80, 0x83, 0x87, 0x90-0x92, 0x97,
// 0x99; on any other code iotcored drops the connection and its
// RegisterThing answer is lost while the cloud activates the certificate.
// It ends by killing iotcored: no DISCONNECT.
func TestPeerGreengrassLite(t *testing.T) {
	for _, race := range []bool{false, true} {
		name := map[bool]string{false: "UnsubscribeBeforeRegister", true: "UnsubscribeAfterRegisterPublish"}[race]
		t.Run(name, func(t *testing.T) { greengrassLiteReplay(t, race) })
	}
}

// greengrassLiteReplay replays one run. Its first UNSUBSCRIBE and its
// RegisterThing publish come from two processes, so either may go first:
// with unsubscribeLate the UNSUBSCRIBE follows the publish.
func greengrassLiteReplay(t *testing.T, unsubscribeLate bool) {
	e := startEnv(t, Options{ClaimPolicies: []string{claimPolicyName}})
	c := e.rawDial(t, e.claimCert(t), 5)
	maxPacketSize := propUint32(0x27, 5000)
	if ack := c.connect(connectFields{clientID: uuid.NewString(), cleanStart: true, keepAlive: 30, props: maxPacketSize}); ack.code != 0 || ack.sessionPresent {
		t.Fatalf("CONNACK %v, want 0x00 without a session", ack)
	}

	key := newKey(t)
	csr := strings.ReplaceAll(csrPEM(t, key), "\n", `\u000A`)
	id := c.publish(topicCSR, 1, []byte(`{"certificateSigningRequest":"`+csr+`"}`), nil)
	if ack := c.expectPuback(id); ack.code != 0 {
		t.Fatalf("PUBACK %v, want 0x00", ack)
	}
	res, pub := c.answer(topicCSR)
	body := testCodec(t, "json").dec(pub.payload)
	if res != "accepted" {
		t.Fatalf("CreateCertificateFromCsr %s: %v", res, body)
	}
	wantUnsuback := func(ack rawPacket, filter string) {
		t.Helper()
		if string(ack.codes) != "\x00" {
			t.Fatalf("UNSUBACK of the never-subscribed %s: % x, want 00 (coreMQTT drops the connection on anything else)", filter, ack.codes)
		}
	}
	if !unsubscribeLate {
		wantUnsuback(c.unsubscribe(topicCSR+"/+"), topicCSR+"/+")
		c.alive()
	}

	serial := "a2_b9_d2_5a_fd_f9"
	id = c.publish(topicRegister, 1, []byte(`{"certificateOwnershipToken":"`+body["certificateOwnershipToken"].(string)+
		`","parameters":{"SerialNumber":"`+serial+`"}}`), nil)
	if unsubscribeLate {
		wantUnsuback(c.unsubscribe(topicCSR+"/+"), topicCSR+"/+")
	}
	if ack := c.expectPuback(id); ack.code != 0 {
		t.Fatalf("PUBACK %v, want 0x00", ack)
	}
	res, pub = c.answer(topicRegister)
	reg := testCodec(t, "json").dec(pub.payload)
	if res != "accepted" || reg["thingName"] != "gg_"+serial {
		t.Fatalf("RegisterThing %s: %v", res, reg)
	}
	wantUnsuback(c.unsubscribe(topicRegister+"/+"), topicRegister+"/+")
	c.alive()
	if len(c.pending) != 0 {
		t.Errorf("unexpected packets: %v", c.pending)
	}
	_ = c.conn.Close() // iotcored is killed: no DISCONNECT

	peerDevice(t, e, "gg_"+serial, key, body["certificatePem"].(string))
}

// subscribeEach subscribes to each filter in a SUBSCRIBE of its own at QoS
// 1, as the embedded-C and v2 SDKs do, and wants each granted QoS 1.
func subscribeEach(t *testing.T, c *rawConn, filters ...string) {
	t.Helper()
	for _, f := range filters {
		if ack := c.subscribe(1, f); string(ack.codes) != "\x01" {
			t.Fatalf("SUBACK %s: % x, want 01", f, ack.codes)
		}
	}
}

// The embedded-C SDK's CSR demo (demos/fleet_provisioning/
// fleet_provisioning_with_csr, coreMQTT 2.3, MQTT 3.1.1, CBOR): client id
// = the device serial number, a persistent session (clean session 0),
// keepalive 60 s, the SDK metrics string as user name. For each request:
// SUBSCRIBE accepted, then rejected (one filter per packet, QoS 1, each
// waiting for its SUBACK), PUBLISH at QoS 1, then UNSUBSCRIBE accepted and
// rejected, one at a time. Then DISCONNECT, and a second connection with
// the new certificate and the same client id. coreMQTT takes a 3.1.1
// CONNACK only if it is exactly 2 bytes with a return code of 0 to 5 (0x87
// is a "bad response", not a refusal), and an UNSUBACK or PUBACK only if it
// is exactly 2 bytes.
func TestPeerEmbeddedC(t *testing.T) {
	dir := initDir(t)
	b, err := os.ReadFile(filepath.Join("testdata", "embeddedc-claim-policy-csr.json"))
	if err != nil {
		t.Fatal(err)
	}
	writePolicy(t, dir, "EmbeddedCClaim", strings.NewReplacer("us-west-2", defaultRegion, "012345678901", defaultAccountID).Replace(string(b)))
	tmpl, err := os.ReadFile(filepath.Join("testdata", "embeddedc-demo-template.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "templates", "demo_template.json"), tmpl, 0o644); err != nil {
		t.Fatal(err)
	}
	// The demo leaves demo_thing_policy to its user; this one is the
	// usual least privilege, as in Greengrass's device policy: a thing
	// connects as itself only.
	writePolicy(t, dir, "demo_thing_policy", `{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect",
     "Resource": "arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"},
    {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
     "Resource": "arn:aws:iot:us-east-1:123456789012:topic/${iot:Connection.Thing.ThingName}/*"},
    {"Effect": "Allow", "Action": "iot:Subscribe",
     "Resource": "arn:aws:iot:us-east-1:123456789012:topicfilter/${iot:Connection.Thing.ThingName}/*"}
  ]
}`)
	e := startEnv(t, Options{Dir: dir, ClaimPolicies: []string{"EmbeddedCClaim"}})
	cb := testCodec(t, "cbor")
	const (
		serial    = "00000001"
		thingName = "fp_demo_" + serial
		csrTopic  = "$aws/certificates/create-from-csr/cbor"
		regTopic  = "$aws/provisioning-templates/demo_template/provision/cbor"
	)
	user := "?SDK=Ubuntu&Version=18.04 LTS&Platform=PC&MQTTLib=core-mqtt@v2.3.1+"
	demoConnect := func(c *rawConn, clientID string) rawPacket {
		return c.connect(connectFields{clientID: clientID, cleanStart: false, keepAlive: 60, username: &user})
	}
	// call runs one request the demo's way and returns the answer.
	call := func(c *rawConn, topic string, req map[string]any) map[string]any {
		t.Helper()
		subscribeEach(t, c, topic+"/accepted", topic+"/rejected")
		id := c.publish(topic, 1, cb.enc(req), nil)
		res, pub := c.answer(topic)
		c.expectPuback(id)
		body := cb.dec(pub.payload)
		if res != "accepted" {
			t.Fatalf("%s: %s %v", topic, res, body)
		}
		c.unsubscribe(topic + "/accepted")
		c.unsubscribe(topic + "/rejected")
		c.alive()
		return body
	}

	c := e.rawDial(t, e.claimCert(t), 4)
	if ack := demoConnect(c, serial); ack.code != 0 || ack.sessionPresent {
		t.Fatalf("CONNACK %v, want 0 without a session", ack)
	}
	key := newKey(t)
	cert := call(c, csrTopic, map[string]any{"certificateSigningRequest": csrPEM(t, key)})
	reg := call(c, regTopic, map[string]any{
		"certificateOwnershipToken": cert["certificateOwnershipToken"],
		"parameters":                map[string]any{"SerialNumber": serial},
	})
	if reg["thingName"] != thingName {
		t.Fatalf("RegisterThing named the thing %v, want %s", reg["thingName"], thingName)
	}
	c.disconnect()
	if got := c.expectClosed(); len(got) != 0 {
		t.Errorf("after DISCONNECT the server sent %v", got)
	}

	// The demo's second connection: new certificate, same client id. The
	// device policy admits only the thing name, so CONNACK is 3.1.1's
	// return code 5, which coreMQTT reports as a refusal.
	dev := provisioned{key: key, certPEM: cert["certificatePem"].(string)}
	c2 := e.rawDial(t, dev.tlsCert(t), 4)
	if ack := demoConnect(c2, serial); ack.code != 0x05 {
		t.Errorf("new certificate, client id %s: CONNACK %v, want return code 5 (not authorized)", serial, ack)
	}
	if got := c2.expectClosed(); len(got) != 0 {
		t.Errorf("after the refusal the server sent %v", got)
	}
	// With client id = thing name it is in.
	c3 := e.rawDial(t, dev.tlsCert(t), 4)
	if ack := demoConnect(c3, thingName); ack.code != 0 {
		t.Fatalf("new certificate, client id = thing name: CONNACK %v, want 0", ack)
	}
	c3.alive()
	c3.disconnect()
	c3.expectClosed()

	peerDevice(t, e, thingName, key, dev.certPEM)
}

// The AWS IoT Device SDK v2 for Python (fleet_provisioning_csr.py on
// aws-c-mqtt's MQTT 5 client, which the Java, JavaScript and C++ SDKs
// share): client id mqtt5-sample-<32 hex>, the SDK metrics string as user
// name, keepalive 1200 s, clean start, no CONNECT properties. Its
// request-response client SUBSCRIBEs to the exact accepted and rejected
// topics (one filter per packet, QoS 1) before it publishes (QoS 1, JSON
// with Python's spacing), and UNSUBSCRIBEs them before it subscribes for
// the next request. It stops without DISCONNECT. The application then
// connects as the thing, with the new certificate and client id = thing
// name, as the Greengrass device policy requires.
func TestPeerDeviceSDKv2(t *testing.T) {
	e := startEnv(t, Options{ClaimPolicies: []string{claimPolicyName}})
	user := "?SDK=PythonV2&Version=1.28.0"
	connect := func(c *rawConn, id string) rawPacket {
		return c.connect(connectFields{clientID: id, cleanStart: true, keepAlive: 1200, username: &user})
	}
	call := func(c *rawConn, topic, payload string) map[string]any {
		t.Helper()
		subscribeEach(t, c, topic+"/accepted", topic+"/rejected")
		id := c.publish(topic, 1, []byte(payload), nil)
		if ack := c.expectPuback(id); ack.code != 0 {
			t.Fatalf("PUBACK %v", ack)
		}
		res, pub := c.answer(topic)
		body := testCodec(t, "json").dec(pub.payload)
		if res != "accepted" {
			t.Fatalf("%s: %s %v", topic, res, body)
		}
		for _, f := range []string{topic + "/accepted", topic + "/rejected"} {
			if ack := c.unsubscribe(f); string(ack.codes) != "\x00" {
				t.Fatalf("UNSUBACK %s: % x, want 00", f, ack.codes)
			}
		}
		return body
	}
	quote := func(s string) string { return string(jsonBody(t, s)) }

	c := e.rawDial(t, e.claimCert(t), 5)
	if ack := connect(c, "mqtt5-sample-"+strings.ReplaceAll(uuid.NewString(), "-", "")); ack.code != 0 {
		t.Fatalf("CONNACK %v, want 0x00", ack)
	}
	key := newKey(t)
	cert := call(c, topicCSR, `{"certificateSigningRequest": `+quote(csrPEM(t, key))+`}`)
	serial := "0a_0b_0c_0d_0e_0f"
	reg := call(c, topicRegister, `{"certificateOwnershipToken": `+quote(cert["certificateOwnershipToken"].(string))+
		`, "parameters": {"SerialNumber": `+quote(serial)+`}}`)
	thing := "gg_" + serial
	if reg["thingName"] != thing {
		t.Fatalf("RegisterThing named the thing %v, want %s", reg["thingName"], thing)
	}
	c.alive()
	_ = c.conn.Close() // stop(): no DISCONNECT

	dev := provisioned{key: key, certPEM: cert["certificatePem"].(string)}
	refused := e.rawDial(t, dev.tlsCert(t), 5)
	if ack := connect(refused, "mqtt5-sample-"+strings.ReplaceAll(uuid.NewString(), "-", "")); ack.code != 0x87 {
		t.Errorf("new certificate, a sample client id: CONNACK %v, want 0x87 (not authorized)", ack)
	}
	refused.expectClosed()
	d := e.rawDial(t, dev.tlsCert(t), 5)
	if ack := connect(d, thing); ack.code != 0 {
		t.Fatalf("new certificate, client id = thing name: CONNACK %v, want 0x00", ack)
	}
	d.alive()
	d.disconnect()
	d.expectClosed()

	peerDevice(t, e, thing, key, dev.certPEM)
}
