package cloudsim

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Limits the embedded broker holds every connection to, so that a client
// that is broken or hostile costs the emulator a bounded amount of memory
// and time. docs/cloud-emulator.md ("Limits") lists them.
const (
	// MaxPayloadSize is AWS IoT Core's limit on a PUBLISH payload, 128 KB
	// (message broker quotas). A provisioning request over it is refused
	// with 400 InvalidPayload, whichever broker carried it.
	MaxPayloadSize = 128 * 1024

	// MaxPacketSize is the largest MQTT packet the embedded broker reads,
	// counted as mochi counts it: the type byte and the body, not the one
	// to four bytes of the length, so a client that keeps to the size
	// announced in CONNACK (which counts them) always fits. It admits a payload of MaxPayloadSize with room to spare
	// for everything else a PUBLISH carries: the fixed header (at most 5
	// bytes), the topic (AWS allows 256 bytes, 258 with its length), the
	// packet id and MQTT 5 properties (AWS caps user properties at 8 KB).
	// A larger packet is never buffered: the client gets DISCONNECT 0x95
	// (packet too large) under MQTT 5, and the connection is closed.
	MaxPacketSize = MaxPayloadSize + 16*1024

	// DefaultConnectTimeout bounds how long a new connection may take to
	// finish the TLS handshake and send CONNECT. AWS IoT documents no
	// such figure; 10 s is ample for a device on a slow link and short
	// enough that idle sockets cannot pile up.
	DefaultConnectTimeout = 10 * time.Second
)

// guardedListener is mochi's TLS listener with a deadline on each new
// connection's handshake and CONNECT, a cap on packet size, and the
// connections that have not yet sent CONNECT closed with the listener:
// mochi knows a client only once CONNECT is read, so it would leave those
// open.
type guardedListener struct {
	*listeners.TCP
	srv     *Server
	timeout time.Duration

	mu      sync.Mutex
	pending map[*guardedConn]struct{} // accepted, CONNECT not yet accepted
	closed  bool
}

func newGuardedListener(s *Server, l *listeners.TCP, timeout time.Duration) *guardedListener {
	return &guardedListener{TCP: l, srv: s, timeout: timeout, pending: map[*guardedConn]struct{}{}}
}

// Serve wraps every connection mochi's listener accepts.
func (l *guardedListener) Serve(establish listeners.EstablishFn) {
	l.TCP.Serve(func(id string, c net.Conn) error {
		gc := &guardedConn{Conn: c, l: l}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = c.Close()
			return nil
		}
		l.pending[gc] = struct{}{}
		l.mu.Unlock()
		// The TLS handshake runs inside the first read, so one deadline
		// bounds both it and the CONNECT; mochi replaces it with the
		// keep-alive deadline once CONNECT is accepted.
		_ = c.SetDeadline(time.Now().Add(l.timeout))
		return establish(id, gc)
	})
}

// Close stops accepting and closes every connection still waiting for its
// CONNECT. Connected clients are mochi's to end (closeFn).
func (l *guardedListener) Close(closeFn listeners.CloseFn) {
	l.TCP.Close(closeFn)
	l.mu.Lock()
	l.closed = true
	waiting := make([]*guardedConn, 0, len(l.pending))
	for gc := range l.pending {
		waiting = append(waiting, gc)
	}
	l.mu.Unlock()
	for _, gc := range waiting {
		_ = gc.Close()
	}
}

func (l *guardedListener) forget(gc *guardedConn) {
	l.mu.Lock()
	delete(l.pending, gc)
	l.mu.Unlock()
}

// admitted is called once mochi accepted a connection's CONNECT: from then
// on it is a client, ended by mochi, and packets over the limit are
// answered with DISCONNECT (MQTT 5).
func admitted(cl *mqtt.Client) {
	gc, ok := cl.Net.Conn.(*guardedConn)
	if !ok {
		return
	}
	gc.client.Store(cl)
	gc.l.forget(gc)
}

// guardedConn follows the MQTT framing of what the client sends, so that a
// fixed header announcing a packet over MaxPacketSize is caught before
// mochi reads it (mochi's own check would close the connection without the
// DISCONNECT MQTT 5 asks for). It never holds more than what the reader
// asked for: the packet's body is counted, not kept.
type guardedConn struct {
	net.Conn
	l      *guardedListener
	client atomic.Pointer[mqtt.Client]

	// Framing state, touched only by Read (mochi reads from one goroutine).
	frame    framer
	tooLarge bool
}

func (c *guardedConn) Read(p []byte) (int, error) {
	if c.tooLarge {
		c.refuse()
		return 0, packets.ErrPacketTooLarge
	}
	n, err := c.Conn.Read(p)
	if over := c.frame.feed(p[:n]); over >= 0 {
		// Hand mochi the packets before the oversized one; the next
		// read refuses it.
		c.tooLarge = true
		if over == 0 {
			c.refuse()
			return 0, packets.ErrPacketTooLarge
		}
		return over, nil
	}
	return n, err
}

// refuse ends the connection: DISCONNECT 0x95 first for a connected client
// (shapeReply drops it under MQTT 3.1.1, which has no server DISCONNECT).
func (c *guardedConn) refuse() {
	if cl := c.client.Load(); cl != nil {
		_ = c.l.srv.broker.DisconnectClient(cl, packets.ErrPacketTooLarge)
		return
	}
	_ = c.Conn.Close()
}

func (c *guardedConn) Close() error {
	c.l.forget(c)
	return c.Conn.Close()
}

// framer walks the MQTT framing of a byte stream: a fixed header byte, a
// remaining length of one to four bytes, then that many bytes.
type framer struct {
	state     int // 0: type byte next; 1: in the remaining length; 2: in the body
	remaining int // body bytes still to skip, or the length read so far
	shift     uint
	lenBytes  int
}

// feed consumes b and returns the offset in b of the first byte of a
// packet whose remaining length puts it over MaxPacketSize, or -1. A
// malformed length (a fifth byte) is left to mochi, which refuses it.
func (f *framer) feed(b []byte) int {
	// Offset of the current packet's first byte within b; 0 when it
	// began in an earlier read, as its first bytes are already mochi's.
	start := 0
	for i := 0; i < len(b); {
		switch f.state {
		case 0:
			start = i
			f.state, f.remaining, f.shift, f.lenBytes = 1, 0, 0, 0
			i++
		case 1:
			v := b[i]
			i++
			f.remaining |= int(v&0x7f) << f.shift
			f.shift += 7
			f.lenBytes++
			if v&0x80 != 0 {
				if f.lenBytes == 4 {
					f.state = 0 // malformed: mochi refuses it
					return -1
				}
				continue
			}
			// Counted as mochi counts it: type byte plus body.
			if f.remaining+1 > MaxPacketSize {
				return start
			}
			f.state = 2
			if f.remaining == 0 {
				f.state = 0
			}
		case 2:
			take := min(f.remaining, len(b)-i)
			f.remaining -= take
			i += take
			if f.remaining == 0 {
				f.state = 0
			}
		}
	}
	return -1
}

// waiting counts the connections that have not sent an accepted CONNECT.
func (l *guardedListener) waiting() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending)
}
