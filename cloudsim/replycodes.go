package cloudsim

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Every packet the embedded broker writes passes through shapeReply, the
// one place that decides which reason code a client sees. mochi follows
// MQTT 5 and sends some codes that AWS IoT Core never does, and a few
// MQTT 5 codes to MQTT 3.1.1 clients, which have no such codes. Strict
// clients treat either as a malformed packet and drop the connection:
// Greengrass nucleus lite's MQTT library on UNSUBACK 0x11, coreMQTT (the
// embedded-C SDK) on CONNACK 0x87. docs/cloud-emulator.md ("Reply codes")
// lists what each packet can carry; replycodes_test.go holds the broker to
// it on the wire.

// v311Connack maps the MQTT 5 CONNACK reason codes mochi and the emulator
// use onto MQTT 3.1.1's return codes, which are 0 to 5 only.
var v311Connack = map[byte]byte{
	0x00: 0x00, // success
	0x84: 0x01, // unsupported protocol version -> unacceptable protocol version
	0x85: 0x02, // client identifier not valid -> identifier rejected
	0x83: 0x03, // implementation specific error -> server unavailable
	0x88: 0x03, // server unavailable
	0x89: 0x03, // server busy
	0x97: 0x03, // quota exceeded
	0x9C: 0x03, // use another server
	0x9D: 0x03, // server moved
	0x9F: 0x03, // connection rate exceeded
	0x86: 0x04, // bad user name or password
	0x8C: 0x04, // bad authentication method
	0x87: 0x05, // not authorized
	0x8A: 0x05, // banned -> not authorized
}

// v311ConnackCode returns the 3.1.1 return code for an MQTT 5 CONNACK
// reason code, and false where 3.1.1 wants the connection closed without
// a CONNACK: a malformed CONNECT or a protocol error [MQTT-3.1.4-1].
// version is the protocol level the client asked for.
func v311ConnackCode(code, version byte, persistentWithoutID bool) (byte, bool) {
	if c, ok := v311Connack[code]; ok {
		return c, true
	}
	switch code {
	case packets.ErrMalformedPacket.Code, packets.ErrProtocolViolation.Code:
		if version != 3 && version != 4 {
			// A level neither 3.1 nor 3.1.1 (nor 5, or this would not
			// be asked) is what return code 1 is for.
			return packets.Err3UnsupportedProtocolVersion.Code, true
		}
		return 0, false
	case packets.ErrUnspecifiedError.Code:
		// mochi's one use of it at CONNECT: a 3.1.1 client asked for a
		// persistent session without a client id, which 3.1.1 answers
		// with "identifier rejected" [MQTT-3.1.3-8].
		if persistentWithoutID {
			return packets.Err3ClientIdentifierNotValid.Code, true
		}
	}
	// A refusal 3.1.1 has no word for: "server unavailable" tells the
	// client that neither its credentials nor its identity are at fault.
	return packets.Err3ServerUnavailable.Code, true
}

// shapeReply rewrites a packet about to be written to cl so that its codes
// are ones AWS IoT sends and cl's protocol version has. It returns false
// for a packet that must not be written at all.
func shapeReply(cl *mqtt.Client, pk packets.Packet) (packets.Packet, bool) {
	v5 := cl.Properties.ProtocolVersion == 5
	switch pk.FixedHeader.Type {
	case packets.Connack:
		if v5 && pk.ReasonCode == packets.CodeSuccess.Code {
			// MQTT 5 has the server announce its limit, so that a
			// client refuses an oversized packet itself.
			pk.Properties.MaximumPacketSize = MaxPacketSize
		}
		if !v5 {
			persistentWithoutID := !cl.Properties.Clean && cl.Properties.Props.AssignedClientID != ""
			code, send := v311ConnackCode(pk.ReasonCode, cl.Properties.ProtocolVersion, persistentWithoutID)
			pk.ReasonCode = code
			if !send {
				return pk, false
			}
		}
	case packets.Puback:
		// mochi acknowledges a QoS 1 publish with "granted QoS 1" (0x01),
		// a SUBACK code; a PUBACK's success is 0x00. It is omitted on the
		// wire unless properties follow, which is when strict clients
		// saw it.
		if pk.ReasonCode < packets.ErrUnspecifiedError.Code {
			pk.ReasonCode = packets.CodeSuccess.Code
		}
	case packets.Suback:
		if !v5 {
			for i, c := range pk.ReasonCodes {
				if c >= packets.ErrUnspecifiedError.Code {
					pk.ReasonCodes[i] = packets.ErrUnspecifiedError.Code
				}
			}
		}
	case packets.Unsuback:
		// AWS IoT answers success for a filter the client never
		// subscribed to: its UNSUBACK codes are 0x00, 0x80, 0x8F and
		// 0x91. Greengrass lite unsubscribes from a filter it never
		// subscribed to after every request, and drops the connection
		// on 0x11.
		for i, c := range pk.ReasonCodes {
			if c == packets.CodeNoSubscriptionExisted.Code {
				pk.ReasonCodes[i] = packets.CodeSuccess.Code
			}
		}
	case packets.Disconnect:
		// An MQTT 3.1.1 server never sends DISCONNECT: it closes the
		// connection, which mochi does right after this write.
		if !v5 {
			return pk, false
		}
	}
	return pk, true
}

// OnPacketEncode applies shapeReply. mochi offers no way to drop a packet
// from this hook, so a packet that must not be sent gets a type mochi
// cannot encode: WritePacket then fails before writing a byte, and every
// caller that sends DISCONNECT closes the connection whether the write
// worked or not.
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	out, send := shapeReply(cl, pk)
	if !send {
		out.FixedHeader.Type = packets.Reserved
	}
	return out
}
