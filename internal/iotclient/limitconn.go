package iotclient

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"

	"github.com/eclipse/paho.golang/autopaho"
)

// PacketTooLargeError is a packet from the server over the Maximum Packet
// Size the client announced. The server broke the protocol; sending the
// same request again gets the same answer, so it is fatal.
type PacketTooLargeError struct {
	Size, Max uint64
}

func (e *PacketTooLargeError) Error() string {
	return fmt.Sprintf("the server sent a packet of %d bytes, over the %d-byte maximum this device announced", e.Size, e.Max)
}

// limitConn reads MQTT fixed headers as bytes pass and fails the read that
// reveals a packet over max, before paho allocates a buffer for it: paho
// reads a packet whole, whatever its length says.
type limitConn struct {
	net.Conn
	max     uint64
	onLarge func(*PacketTooLargeError)

	mu sync.Mutex
	// Parser state: in a header (headerPos 0 = type byte, then the
	// remaining-length varint) or skipping a body of body bytes.
	inBody    bool
	body      uint64
	headerPos int
	length    uint64
	shift     uint
	err       error
}

func (c *limitConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Read(p)
	if perr := c.scan(p[:n]); perr != nil {
		c.err = perr
		if c.onLarge != nil {
			c.onLarge(perr)
		}
		_ = c.Conn.Close()
		return 0, perr
	}
	return n, err
}

// scan advances the parser over b.
func (c *limitConn) scan(b []byte) *PacketTooLargeError {
	for len(b) > 0 {
		if c.inBody {
			k := uint64(len(b))
			if k > c.body {
				k = c.body
			}
			c.body -= k
			b = b[k:]
			if c.body == 0 {
				c.inBody = false
			}
			continue
		}
		ch := b[0]
		b = b[1:]
		if c.headerPos == 0 {
			c.headerPos, c.length, c.shift = 1, 0, 0
			continue
		}
		c.length |= uint64(ch&0x7f) << c.shift
		c.shift += 7
		c.headerPos++
		if ch&0x80 != 0 && c.headerPos <= 4 {
			continue
		}
		// Header done: the type byte, the varint, then the body.
		total := uint64(c.headerPos) + c.length
		if total > c.max {
			return &PacketTooLargeError{Size: total, Max: c.max}
		}
		c.headerPos = 0
		if c.length > 0 {
			c.inBody, c.body = true, c.length
		}
	}
	return nil
}

// dialLimited opens the connection with d (directly or through the
// proxy; autopaho's own all_proxy support is not used) and puts the packet
// size check under paho.
func dialLimited(d dialer, max uint64, onLarge func(*PacketTooLargeError)) func(context.Context, autopaho.ClientConfig, *url.URL) (net.Conn, error) {
	return func(ctx context.Context, cfg autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
		// autopaho hands a custom dialer its whole-run context, not the
		// attempt's: bound the attempt here.
		ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
		conn, err := d.dial(ctx, u.Host)
		if err != nil {
			return nil, err
		}
		return &packetConn{Conn: &limitConn{Conn: conn, max: max, onLarge: onLarge}}, nil
	}
}
