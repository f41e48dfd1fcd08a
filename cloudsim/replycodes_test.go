package cloudsim

import "testing"

// Every refusal and acknowledgement the embedded broker sends, checked
// byte by byte with the low-level client, under MQTT 5 and MQTT 3.1.1:
// the codes are the ones AWS IoT Core sends and the client's protocol
// version has (docs/cloud-emulator.md, "Reply codes").

func versions() []byte { return []byte{5, 4} }

func vname(v byte) string {
	if v == 5 {
		return "MQTT5"
	}
	return "MQTT311"
}

func claimConnect(t *testing.T, e *env, v byte) *rawConn {
	t.Helper()
	c := e.rawDial(t, e.claimCert(t), v)
	if ack := c.connect(connectFields{clientID: randomID(), cleanStart: true, keepAlive: 30}); ack.code != 0 {
		t.Fatalf("claim CONNECT refused: %v", ack)
	}
	return c
}

// A CONNECT the policy refuses gets "not authorized": 0x87 under MQTT 5,
// return code 5 under 3.1.1, which has no 0x87; then the connection is
// closed, with no further packet.
func TestReplyCodeConnectRefused(t *testing.T) {
	e := startEnv(t, Options{})
	claim := e.dialClaim(t)
	p := createCert(t, claim)
	register(t, claim, &p, "SN-REFUSED")
	for _, v := range versions() {
		t.Run(vname(v), func(t *testing.T) {
			// ACTIVE, but the device policy admits only the thing's
			// name as client id.
			c := e.rawDial(t, p.tlsCert(t), v)
			ack := c.connect(connectFields{clientID: randomID(), cleanStart: true, keepAlive: 30})
			want := map[byte]byte{5: 0x87, 4: 0x05}[v]
			if ack.code != want {
				t.Errorf("CONNACK %v: code 0x%02x, want 0x%02x (not authorized)", ack, ack.code, want)
			}
			if rest := c.expectClosed(); len(rest) != 0 {
				t.Errorf("after a refused CONNECT the server sent %v", rest)
			}
		})
	}
}

// MQTT 3.1.1 requires return code 2 (identifier rejected) for an empty
// client id with a persistent session [MQTT-3.1.3-8].
func TestReplyCodeEmptyClientIDPersistent311(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.rawDial(t, e.claimCert(t), 4)
	ack := c.connect(connectFields{clientID: "", cleanStart: false, keepAlive: 30})
	if ack.code != 0x02 {
		t.Errorf("CONNACK %v: code 0x%02x, want 0x02 (identifier rejected)", ack, ack.code)
	}
	c.expectClosed()
}

// A CONNECT that breaks the protocol (here: the reserved flag set) gets
// CONNACK 0x82 (protocol error) under MQTT 5; under 3.1.1, which has no
// such return code, the connection is closed without a CONNACK
// [MQTT-3.1.4-1]. A protocol level the broker does not speak gets 3.1.1's
// return code 1 (unacceptable protocol version).
func TestReplyCodeMalformedConnect(t *testing.T) {
	e := startEnv(t, Options{})
	t.Run("MQTT5", func(t *testing.T) {
		c := e.rawDial(t, e.claimCert(t), 5)
		ack := c.connect(connectFields{clientID: randomID(), cleanStart: true, keepAlive: 30, flags: 0x01})
		if ack.code != 0x82 {
			t.Errorf("CONNACK %v: code 0x%02x, want 0x82 (protocol error)", ack, ack.code)
		}
		c.expectClosed()
	})
	t.Run("MQTT311", func(t *testing.T) {
		c := e.rawDial(t, e.claimCert(t), 4)
		c.sendConnect(connectFields{clientID: randomID(), cleanStart: true, keepAlive: 30, flags: 0x01})
		if got := c.expectClosed(); len(got) != 0 {
			t.Errorf("a malformed 3.1.1 CONNECT was answered %v, want a close", got)
		}
	})
	t.Run("level6", func(t *testing.T) {
		c := e.rawDial(t, e.claimCert(t), 4)
		ack := c.connect(connectFields{clientID: randomID(), cleanStart: true, keepAlive: 30, level: 6})
		if ack.code != 0x01 {
			t.Errorf("CONNACK %v: code 0x%02x, want 0x01 (unacceptable protocol version)", ack, ack.code)
		}
		c.expectClosed()
	})
}

// A filter the policy does not allow is refused in its SUBACK (0x87, or
// 0x80 under 3.1.1), the others granted at QoS 1 at most, and the
// connection stays up.
func TestReplyCodeSubscribeRefused(t *testing.T) {
	e := startEnv(t, Options{ClaimPolicies: []string{claimPolicyName}})
	for _, v := range versions() {
		t.Run(vname(v), func(t *testing.T) {
			c := claimConnect(t, e, v)
			ack := c.subscribe(1, "$aws/certificates/create/json/accepted", topicCSR+"/accepted", topicCSR+"/rejected")
			refused := map[byte]byte{5: 0x87, 4: 0x80}[v]
			if want := []byte{refused, 0x01, 0x01}; string(ack.codes) != string(want) {
				t.Errorf("SUBACK codes % x, want % x", ack.codes, want)
			}
			c.alive()
		})
	}
}

// UNSUBSCRIBE of a filter the client never subscribed to succeeds, as on
// AWS IoT (its UNSUBACK codes are 0x00, 0x80, 0x8F and 0x91: never 0x11),
// alone and beside one it did subscribe to; the connection stays up.
func TestReplyCodeUnsubscribeNeverSubscribed(t *testing.T) {
	e := startEnv(t, Options{})
	for _, v := range versions() {
		t.Run(vname(v), func(t *testing.T) {
			c := claimConnect(t, e, v)
			ack := c.unsubscribe(topicCSR + "/+")
			if v == 5 && string(ack.codes) != "\x00" {
				t.Errorf("UNSUBACK codes % x, want 00", ack.codes)
			}
			c.alive()
			c.subscribe(1, topicCSR+"/accepted")
			ack = c.unsubscribe(topicCSR+"/accepted", topicCSR+"/rejected")
			if v == 5 && string(ack.codes) != "\x00\x00" {
				t.Errorf("UNSUBACK codes % x, want 00 00", ack.codes)
			}
			c.alive()
		})
	}
}

// A publish the policy refuses: PUBACK 0x87 and the connection stays up
// under MQTT 5; under 3.1.1, which cannot refuse a publish, the connection
// is closed as AWS IoT does, and no DISCONNECT (which a 3.1.1 server never
// sends) comes first.
func TestReplyCodePublishRefused(t *testing.T) {
	e := startEnv(t, Options{ClaimPolicies: []string{claimPolicyName}})
	for _, v := range versions() {
		t.Run(vname(v), func(t *testing.T) {
			c := claimConnect(t, e, v)
			id := c.publish("$aws/certificates/create/json", 1, []byte("{}"), nil)
			if v == 4 {
				if rest := c.expectClosed(); len(rest) != 0 {
					t.Errorf("a refused 3.1.1 publish was answered %v before the close", rest)
				}
				return
			}
			if ack := c.expectPuback(id); ack.code != 0x87 {
				t.Errorf("PUBACK %v: code 0x%02x, want 0x87", ack, ack.code)
			}
			c.alive()
		})
	}
}

// An accepted QoS 1 publish is acknowledged with success (0x00), whatever
// properties it carries: not with mochi's "granted QoS 1" (0x01), which is
// no PUBACK reason code, and without echoing the publisher's user
// properties.
func TestReplyCodePublishAccepted(t *testing.T) {
	e := startEnv(t, Options{})
	c := claimConnect(t, e, 5)
	id := c.publish(topicCSR, 1, []byte(`{"certificateSigningRequest":""}`),
		concat(propByte(0x01, 1), propUser("trace", "abc")))
	ack := c.expectPuback(id)
	if ack.code != 0 {
		t.Errorf("PUBACK %v: code 0x%02x, want 0x00", ack, ack.code)
	}
	if len(ack.raw) > 5 {
		t.Errorf("PUBACK %v carries properties; AWS IoT does not echo them", ack)
	}
	if res, _ := c.answer(topicCSR); res != "rejected" {
		t.Errorf("empty CSR answered %s", res)
	}
	c.alive()
}

// A second connection with the same client id takes the session over: the
// first gets DISCONNECT 0x8E under MQTT 5 and is closed without a packet
// under 3.1.1.
func TestReplyCodeSessionTakenOver(t *testing.T) {
	e := startEnv(t, Options{})
	for _, v := range versions() {
		t.Run(vname(v), func(t *testing.T) {
			id := randomID()
			first := e.rawDial(t, e.claimCert(t), v)
			first.connect(connectFields{clientID: id, cleanStart: true, keepAlive: 30})
			second := e.rawDial(t, e.claimCert(t), v)
			if ack := second.connect(connectFields{clientID: id, cleanStart: true, keepAlive: 30}); ack.code != 0 {
				t.Fatalf("second CONNECT: %v", ack)
			}
			checkServerClose(t, first.expectClosed(), v, 0x8E)
			second.alive()
		})
	}
}

// Closing the emulator ends every connection: DISCONNECT 0x8B (server
// shutting down) under MQTT 5, a plain close under 3.1.1.
func TestReplyCodeServerShuttingDown(t *testing.T) {
	for _, v := range versions() {
		t.Run(vname(v), func(t *testing.T) {
			e := startEnv(t, Options{})
			c := claimConnect(t, e, v)
			go func() { _ = e.srv.Close() }()
			checkServerClose(t, c.expectClosed(), v, 0x8B)
		})
	}
}

// checkServerClose asserts what came before a close the server made: one
// DISCONNECT with code under MQTT 5, nothing under 3.1.1.
func checkServerClose(t *testing.T, got []rawPacket, v, code byte) {
	t.Helper()
	if v == 4 {
		if len(got) != 0 {
			t.Errorf("an MQTT 3.1.1 connection got %v before the close, want nothing", got)
		}
		return
	}
	if len(got) != 1 || got[0].typ != ptDisconnect || got[0].code != code {
		t.Errorf("before the close got %v, want DISCONNECT 0x%02x", got, code)
	}
}
