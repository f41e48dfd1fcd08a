package iotclient

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// The first PINGREQ of a connection goes out a keep-alive interval after
// it is up, not at once as paho's own pinger sends it.
func TestKeepAlivePingerWaitsAnInterval(t *testing.T) {
	device, broker := net.Pipe()
	defer device.Close()
	defer broker.Close()
	ctx, cancel := context.WithCancel(context.Background())
	k := &keepAlivePinger{}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- k.Run(ctx, &packetConn{Conn: device}, 1) }()
	got := make([]byte, 2)
	if _, err := io.ReadFull(broker, got); err != nil {
		t.Fatal(err)
	}
	// A slow machine can only make it later.
	if since := time.Since(start); since < time.Second-50*time.Millisecond {
		t.Errorf("first PINGREQ after %v; want it a keep-alive interval (1 s) after the connection was up", since)
	}
	if !bytes.Equal(got, []byte{0xC0, 0x00}) {
		t.Fatalf("sent %x, want PINGREQ c000", got)
	}
	k.PingResp()
	cancel()
	// Run ends with the context. (Had this goroutine stalled a whole
	// interval before PingResp, paho's pinger would report the PINGRESP
	// missing instead: that is its own rule, not what is tested here.)
	if err := <-done; err != nil && err.Error() != "PINGRESP timed out" {
		t.Fatalf("Run: %v", err)
	}
}
