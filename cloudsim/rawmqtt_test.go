package cloudsim

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// rawConn is a low-level MQTT client for replaying, packet by packet, what
// a device client we did not write sends, and for holding every byte the
// emulator answers to the MQTT specification of the client's version. It
// encodes and decodes by hand, from the MQTT 3.1.1 and 5.0 specifications,
// and shares no code with the broker (mochi) or with the paho clients the
// other tests use, so a packet both libraries get wrong cannot pass here.
//
// Like the strict clients it stands in for (coreMQTT, Greengrass lite's
// MQTT library, aws-c-mqtt), it treats a reason code the specification
// does not allow for that packet and version as a malformed packet.
type rawConn struct {
	t       *testing.T
	conn    net.Conn
	r       *bufio.Reader
	version byte // 4 (MQTT 3.1.1) or 5
	nextID  uint16
	// pending holds packets read while waiting for another kind.
	pending []rawPacket
}

// MQTT control packet types (the high nibble of the first byte).
const (
	ptConnect     byte = 1
	ptConnack     byte = 2
	ptPublish     byte = 3
	ptPuback      byte = 4
	ptSubscribe   byte = 8
	ptSuback      byte = 9
	ptUnsubscribe byte = 10
	ptUnsuback    byte = 11
	ptPingreq     byte = 12
	ptPingresp    byte = 13
	ptDisconnect  byte = 14
)

var packetNames = map[byte]string{
	ptConnect: "CONNECT", ptConnack: "CONNACK", ptPublish: "PUBLISH", ptPuback: "PUBACK",
	5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP",
	ptSubscribe: "SUBSCRIBE", ptSuback: "SUBACK", ptUnsubscribe: "UNSUBSCRIBE", ptUnsuback: "UNSUBACK",
	ptPingreq: "PINGREQ", ptPingresp: "PINGRESP", ptDisconnect: "DISCONNECT", 15: "AUTH",
}

// Reason codes MQTT 5.0 allows in each packet a server sends (spec
// sections 3.2.2.2, 3.4.2.1, 3.9.3, 3.11.3, 3.14.2.1), and the return
// codes MQTT 3.1.1 allows (3.2.2.3, 3.9.3).
var (
	spec5Connack = codeSet(0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A,
		0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F)
	spec5Puback     = codeSet(0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)
	spec5Suback     = codeSet(0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2)
	spec5Unsuback   = codeSet(0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91)
	spec5Disconnect = codeSet(0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F,
		0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2)
	spec311Connack = codeSet(0x00, 0x01, 0x02, 0x03, 0x04, 0x05)
	spec311Suback  = codeSet(0x00, 0x01, 0x02, 0x80)
)

func codeSet(codes ...byte) map[byte]bool {
	m := map[byte]bool{}
	for _, c := range codes {
		m[c] = true
	}
	return m
}

// rawPacket is one packet the server sent, decoded.
type rawPacket struct {
	typ   byte
	flags byte
	raw   []byte // the whole packet, fixed header included

	sessionPresent bool   // CONNACK
	code           byte   // CONNACK, PUBACK, DISCONNECT (0 when omitted)
	codes          []byte // SUBACK, UNSUBACK (MQTT 5; none in 3.1.1 UNSUBACK)
	packetID       uint16
	topic          string // PUBLISH
	payload        []byte // PUBLISH
	qos            byte   // PUBLISH
}

func (p rawPacket) String() string {
	return fmt.Sprintf("%s % x", packetNames[p.typ], p.raw)
}

// rawDial opens a TLS connection to the emulator with cert; nothing is sent.
func (e *env) rawDial(t *testing.T, cert tls.Certificate, version byte) *rawConn {
	t.Helper()
	d := &net.Dialer{Timeout: waitLimit}
	conn, err := tls.DialWithDialer(d, "tcp", e.srv.Addr(), e.tlsConfig(t, cert))
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawConn{t: t, conn: conn, r: bufio.NewReader(conn), version: version, nextID: 1}
}

// connectFields are the CONNECT packet's variable header and payload.
type connectFields struct {
	clientID   string
	cleanStart bool // Clean Session in 3.1.1
	keepAlive  uint16
	username   *string
	// props are MQTT 5 CONNECT properties, already encoded (see prop*).
	props []byte
	// level overrides the protocol level sent (default: the conn's
	// version); flags are ORed into the connect flags, for malformed
	// CONNECTs.
	level byte
	flags byte
}

// connect sends CONNECT and returns the CONNACK.
func (c *rawConn) connect(f connectFields) rawPacket {
	c.t.Helper()
	c.sendConnect(f)
	return c.expect(ptConnack)
}

// sendConnect sends CONNECT without waiting for the answer.
func (c *rawConn) sendConnect(f connectFields) {
	c.t.Helper()
	var vh bytes.Buffer
	vh.Write(mqttString("MQTT"))
	level := c.version
	if f.level != 0 {
		level = f.level
	}
	vh.WriteByte(level)
	flags := f.flags
	if f.cleanStart {
		flags |= 0x02
	}
	if f.username != nil {
		flags |= 0x80
	}
	vh.WriteByte(flags)
	_ = binary.Write(&vh, binary.BigEndian, f.keepAlive)
	if c.version == 5 {
		vh.Write(withLength(f.props))
	}
	vh.Write(mqttString(f.clientID))
	if f.username != nil {
		vh.Write(mqttString(*f.username))
	}
	c.send(ptConnect<<4, vh.Bytes())
}

// publish sends a PUBLISH at QoS 0 or 1 and returns its packet id (0 at
// QoS 0). props are MQTT 5 PUBLISH properties, already encoded.
func (c *rawConn) publish(topic string, qos byte, payload []byte, props []byte) uint16 {
	c.t.Helper()
	var b bytes.Buffer
	b.Write(mqttString(topic))
	var id uint16
	if qos > 0 {
		id = c.id()
		_ = binary.Write(&b, binary.BigEndian, id)
	}
	if c.version == 5 {
		b.Write(withLength(props))
	}
	b.Write(payload)
	c.send(ptPublish<<4|qos<<1, b.Bytes())
	return id
}

// subscribe sends SUBSCRIBE for filters at qos and returns the SUBACK.
func (c *rawConn) subscribe(qos byte, filters ...string) rawPacket {
	c.t.Helper()
	id := c.id()
	var b bytes.Buffer
	_ = binary.Write(&b, binary.BigEndian, id)
	if c.version == 5 {
		b.WriteByte(0) // no properties
	}
	for _, f := range filters {
		b.Write(mqttString(f))
		b.WriteByte(qos)
	}
	c.send(ptSubscribe<<4|0x02, b.Bytes())
	ack := c.expect(ptSuback)
	if ack.packetID != id {
		c.t.Fatalf("SUBACK for packet id %d, want %d", ack.packetID, id)
	}
	if len(ack.codes) != len(filters) {
		c.t.Fatalf("SUBACK has %d codes for %d filters: %v", len(ack.codes), len(filters), ack)
	}
	return ack
}

// unsubscribe sends UNSUBSCRIBE and returns the UNSUBACK.
func (c *rawConn) unsubscribe(filters ...string) rawPacket {
	c.t.Helper()
	id := c.id()
	var b bytes.Buffer
	_ = binary.Write(&b, binary.BigEndian, id)
	if c.version == 5 {
		b.WriteByte(0)
	}
	for _, f := range filters {
		b.Write(mqttString(f))
	}
	c.send(ptUnsubscribe<<4|0x02, b.Bytes())
	ack := c.expect(ptUnsuback)
	if ack.packetID != id {
		c.t.Fatalf("UNSUBACK for packet id %d, want %d", ack.packetID, id)
	}
	if c.version == 5 && len(ack.codes) != len(filters) {
		c.t.Fatalf("UNSUBACK has %d codes for %d filters: %v", len(ack.codes), len(filters), ack)
	}
	return ack
}

// puback acknowledges a QoS 1 PUBLISH the server sent.
func (c *rawConn) puback(id uint16) {
	c.t.Helper()
	c.send(ptPuback<<4, binary.BigEndian.AppendUint16(nil, id))
}

// disconnect sends a normal DISCONNECT.
func (c *rawConn) disconnect() {
	c.t.Helper()
	c.send(ptDisconnect<<4, nil)
}

// alive proves the connection is still up: PINGREQ is answered by PINGRESP.
func (c *rawConn) alive() {
	c.t.Helper()
	c.send(ptPingreq<<4, nil)
	c.expect(ptPingresp)
}

// answer waits for the PUBLISH of an answer on topic+"/accepted" or
// "/rejected", acknowledges it when QoS 1, and returns which and the
// payload.
func (c *rawConn) answer(topic string) (string, rawPacket) {
	c.t.Helper()
	p := c.expect(ptPublish)
	res, ok := strings.CutPrefix(p.topic, topic+"/")
	if !ok || (res != "accepted" && res != "rejected") {
		c.t.Fatalf("answer on %s, want %s/accepted or /rejected", p.topic, topic)
	}
	if p.qos == 1 {
		c.puback(p.packetID)
	}
	return res, p
}

// expectPuback waits for the PUBACK of packet id.
func (c *rawConn) expectPuback(id uint16) rawPacket {
	c.t.Helper()
	p := c.expect(ptPuback)
	if p.packetID != id {
		c.t.Fatalf("PUBACK for packet id %d, want %d", p.packetID, id)
	}
	return p
}

// expect returns the next packet of type typ, keeping others for later;
// the test fails if the connection ends first or a packet is malformed.
func (c *rawConn) expect(typ byte) rawPacket {
	c.t.Helper()
	for i, p := range c.pending {
		if p.typ == typ {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			return p
		}
	}
	for {
		p, err := c.read()
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", packetNames[typ], err)
		}
		if p.typ == typ {
			return p
		}
		if p.typ == ptDisconnect {
			c.t.Fatalf("waiting for %s: server sent %v", packetNames[typ], p)
		}
		c.pending = append(c.pending, p)
	}
}

// expectClosed asserts the server closes the connection. It returns the
// packets received before the close (a DISCONNECT, for MQTT 5).
func (c *rawConn) expectClosed() []rawPacket {
	c.t.Helper()
	got := append([]rawPacket(nil), c.pending...)
	c.pending = nil
	for {
		p, err := c.read()
		if err != nil {
			if !errors.Is(err, io.EOF) && !isClosedConn(err) {
				c.t.Fatalf("waiting for the server to close: %v", err)
			}
			return got
		}
		got = append(got, p)
	}
}

func isClosedConn(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "connection reset")
}

func (c *rawConn) id() uint16 {
	id := c.nextID
	c.nextID++
	return id
}

func (c *rawConn) send(first byte, body []byte) {
	c.t.Helper()
	var b bytes.Buffer
	b.WriteByte(first)
	b.Write(varint(len(body)))
	b.Write(body)
	if err := c.conn.SetWriteDeadline(time.Now().Add(waitLimit)); err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(b.Bytes()); err != nil {
		c.t.Fatalf("send %s: %v", packetNames[first>>4], err)
	}
}

// read reads and strictly decodes one packet. A packet the specification
// does not allow is an error, as a strict client would make it.
func (c *rawConn) read() (rawPacket, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(waitLimit)); err != nil {
		return rawPacket{}, err
	}
	first, err := c.r.ReadByte()
	if err != nil {
		return rawPacket{}, err
	}
	n, lenBytes, err := readVarint(c.r)
	if err != nil {
		return rawPacket{}, fmt.Errorf("remaining length: %w", err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return rawPacket{}, fmt.Errorf("%s body: %w", packetNames[first>>4], err)
	}
	p := rawPacket{typ: first >> 4, flags: first & 0x0f, raw: append(append([]byte{first}, lenBytes...), body...)}
	if err := c.decode(&p, body); err != nil {
		return p, fmt.Errorf("malformed %v: %w", p, err)
	}
	return p, nil
}

func (c *rawConn) decode(p *rawPacket, b []byte) error {
	v5 := c.version == 5
	if p.typ != ptPublish && p.flags != 0 {
		return fmt.Errorf("fixed header flags 0x%x, want 0", p.flags)
	}
	switch p.typ {
	case ptConnack:
		if len(b) < 2 || b[0]&^1 != 0 {
			return errors.New("bad acknowledge flags")
		}
		p.sessionPresent, p.code = b[0] == 1, b[1]
		if p.code != 0 && p.sessionPresent {
			return errors.New("session present on a refusal")
		}
		if !v5 {
			if len(b) != 2 {
				return fmt.Errorf("3.1.1 CONNACK of %d bytes", len(b))
			}
			if !spec311Connack[p.code] {
				return fmt.Errorf("return code 0x%02x is not an MQTT 3.1.1 CONNACK return code", p.code)
			}
			return nil
		}
		if !spec5Connack[p.code] {
			return fmt.Errorf("reason code 0x%02x is not an MQTT 5 CONNACK reason code", p.code)
		}
		_, err := skipProps(b[2:], true)
		return err
	case ptPublish:
		p.qos = (p.flags >> 1) & 3
		if p.qos > 1 {
			return fmt.Errorf("QoS %d: AWS IoT sends QoS 0 or 1 only", p.qos)
		}
		if len(b) < 2 {
			return errors.New("short")
		}
		tl := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+tl {
			return errors.New("topic overruns the packet")
		}
		p.topic, b = string(b[2:2+tl]), b[2+tl:]
		if p.qos > 0 {
			var err error
			if p.packetID, b, err = splitID(b, v5); err != nil {
				return err
			}
		} else if v5 {
			var err error
			if b, err = skipProps(b, true); err != nil {
				return err
			}
		}
		p.payload = b
		return nil
	case ptPuback:
		if len(b) < 2 {
			return errors.New("no packet id")
		}
		p.packetID = binary.BigEndian.Uint16(b)
		if !v5 {
			if len(b) != 2 {
				return fmt.Errorf("3.1.1 PUBACK of %d bytes", len(b))
			}
			return nil
		}
		if len(b) > 2 {
			p.code = b[2]
			if len(b) > 3 {
				if _, err := skipProps(b[3:], true); err != nil {
					return err
				}
			}
		}
		if !spec5Puback[p.code] {
			return fmt.Errorf("reason code 0x%02x is not an MQTT 5 PUBACK reason code", p.code)
		}
		return nil
	case ptSuback, ptUnsuback:
		var err error
		if p.packetID, b, err = splitID(b, v5); err != nil {
			return err
		}
		p.codes = b
		allowed, name := spec311Suback, "3.1.1 SUBACK return"
		switch {
		case p.typ == ptUnsuback && !v5:
			if len(b) != 0 {
				return errors.New("3.1.1 UNSUBACK carries a payload")
			}
			return nil
		case p.typ == ptUnsuback:
			allowed, name = spec5Unsuback, "MQTT 5 UNSUBACK reason"
		case v5:
			allowed, name = spec5Suback, "MQTT 5 SUBACK reason"
		}
		if len(b) == 0 {
			return errors.New("no codes")
		}
		for _, code := range b {
			if !allowed[code] {
				return fmt.Errorf("0x%02x is not an %s code", code, name)
			}
		}
		return nil
	case ptPingresp:
		if len(b) != 0 {
			return errors.New("PINGRESP with a body")
		}
		return nil
	case ptDisconnect:
		if !v5 {
			return errors.New("an MQTT 3.1.1 server never sends DISCONNECT")
		}
		if len(b) > 0 {
			p.code = b[0]
			if len(b) > 1 {
				if _, err := skipProps(b[1:], true); err != nil {
					return err
				}
			}
		}
		if !spec5Disconnect[p.code] {
			return fmt.Errorf("reason code 0x%02x is not an MQTT 5 DISCONNECT reason code", p.code)
		}
		return nil
	}
	return fmt.Errorf("a server does not send %s", packetNames[p.typ])
}

// splitID reads a packet id and, under MQTT 5, the property block after
// it; it returns what follows.
func splitID(b []byte, v5 bool) (uint16, []byte, error) {
	if len(b) < 2 {
		return 0, nil, errors.New("no packet id")
	}
	id, rest := binary.BigEndian.Uint16(b), b[2:]
	if id == 0 {
		return 0, nil, errors.New("packet id 0")
	}
	if !v5 {
		return id, rest, nil
	}
	rest, err := skipProps(rest, true)
	return id, rest, err
}

// skipProps checks an MQTT 5 property block's length and returns what
// follows it.
func skipProps(b []byte, required bool) ([]byte, error) {
	if len(b) == 0 {
		if required {
			return nil, errors.New("no property length")
		}
		return b, nil
	}
	n, used, err := readVarint(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		return nil, fmt.Errorf("property length: %w", err)
	}
	if len(used)+n > len(b) {
		return nil, errors.New("properties overrun the packet")
	}
	return b[len(used)+n:], nil
}

func mqttString(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

func withLength(props []byte) []byte {
	return append(varint(len(props)), props...)
}

func varint(n int) []byte {
	var out []byte
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			return out
		}
	}
}

func readVarint(r *bufio.Reader) (int, []byte, error) {
	var n, mult int
	var used []byte
	for i := 0; i < 4; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, used, err
		}
		used = append(used, b)
		n += int(b&0x7f) << mult
		if b&0x80 == 0 {
			return n, used, nil
		}
		mult += 7
	}
	return 0, used, errors.New("variable byte integer longer than 4 bytes")
}

// MQTT 5 properties, encoded (spec 2.2.2.2).
func propUint32(id byte, v uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{id}, v)
}

func propUint16(id byte, v uint16) []byte {
	return binary.BigEndian.AppendUint16([]byte{id}, v)
}

func propByte(id, v byte) []byte { return []byte{id, v} }

func propUser(k, v string) []byte {
	return append(append([]byte{0x26}, mqttString(k)...), mqttString(v)...)
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// sendRaw writes bytes as they are, for packets no encoder here would
// build (a fixed header announcing more than is sent).
func (c *rawConn) sendRaw(b []byte) {
	c.t.Helper()
	if err := c.conn.SetWriteDeadline(time.Now().Add(waitLimit)); err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}
