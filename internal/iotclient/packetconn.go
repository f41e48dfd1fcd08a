package iotclient

import (
	"net"
	"sync"
	"sync/atomic"
)

// packetConn sends each MQTT packet paho writes as one Write, so one TLS
// record and, with Nagle's algorithm off as Go sets it, one TCP segment.
// paho writes a packet as several slices through net.Buffers, which only a
// raw TCP connection turns into a single writev: on a TLS connection each
// slice became a record of its own, a PUBLISH four of them, each with its
// 22 bytes of record overhead, its own encryption and its own system call
// on both ends. paho locks a connection that is a sync.Locker around each
// packet's write (it locks nothing else), so the slices written between
// Lock and Unlock are gathered, and Unlock sends them.
type packetConn struct {
	net.Conn
	mu        sync.Mutex
	gathering atomic.Bool // between Lock and Unlock
	buf       []byte
	err       error // the send that failed; every later Write returns it
}

func (c *packetConn) Lock() {
	c.mu.Lock()
	c.gathering.Store(true)
}

func (c *packetConn) Write(b []byte) (int, error) {
	if !c.gathering.Load() {
		// Not inside paho's lock: nothing to gather with.
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.err != nil {
			return 0, c.err
		}
		return c.Conn.Write(b)
	}
	if c.err != nil {
		return 0, c.err
	}
	c.buf = append(c.buf, b...)
	return len(b), nil
}

// Unlock sends what was gathered. It cannot return an error: a send that
// fails closes the connection, so that paho's reader sees it end at once
// and reports the connection lost, as it would for a failed write.
func (c *packetConn) Unlock() {
	if len(c.buf) > 0 && c.err == nil {
		if _, err := c.Conn.Write(c.buf); err != nil {
			c.err = err
			_ = c.Conn.Close()
		}
	}
	// A packet is a few hundred bytes; a large one (a CSR, a certificate
	// in create-keys mode) is not kept for the next.
	if cap(c.buf) > 4096 {
		c.buf = nil
	}
	c.buf = c.buf[:0]
	c.gathering.Store(false)
	c.mu.Unlock()
}
