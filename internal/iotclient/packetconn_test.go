package iotclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/eclipse/paho.golang/packets"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// writeCounter is a connection that records each Write.
type writeCounter struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	fail   error
	closed bool
}

func (w *writeCounter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail != nil {
		return 0, w.fail
	}
	w.writes = append(w.writes, bytes.Clone(b))
	return len(b), nil
}

func (w *writeCounter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	return nil
}

// Every packet paho writes through packetConn is one Write holding
// exactly the bytes paho's encoding makes of it.
func TestPacketConnSendsAPacketInOneWrite(t *testing.T) {
	qos1 := &packets.Publish{QoS: 1, PacketID: 7, Topic: "$aws/certificates/create-from-csr/json", Payload: []byte(`{"certificateSigningRequest":"..."}`),
		Properties: &packets.Properties{}}
	sub := &packets.Subscribe{PacketID: 8, Properties: &packets.Properties{}, Subscriptions: []packets.SubOptions{
		{Topic: "$aws/certificates/create-from-csr/json/accepted", QoS: 1}, {Topic: "$aws/certificates/create-from-csr/json/rejected", QoS: 1}}}
	for name, pk := range map[string]interface {
		WriteTo(io.Writer) (int64, error)
	}{"PUBLISH": qos1, "SUBSCRIBE": sub, "PUBACK": &packets.Puback{PacketID: 7, Properties: &packets.Properties{}},
		"DISCONNECT": &packets.Disconnect{Properties: &packets.Properties{}}} {
		var want bytes.Buffer
		if _, err := pk.WriteTo(&want); err != nil {
			t.Fatal(err)
		}
		under := &writeCounter{}
		if _, err := pk.WriteTo(&packetConn{Conn: under}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(under.writes) != 1 || !bytes.Equal(under.writes[0], want.Bytes()) {
			t.Errorf("%s went out in %d writes %x; want one write %x", name, len(under.writes), under.writes, want.Bytes())
		}
	}
}

// A send that fails closes the connection (so paho's reader reports it
// lost at once), and every later write returns the error.
func TestPacketConnFailedSend(t *testing.T) {
	under := &writeCounter{fail: errors.New("broken pipe")}
	pc := &packetConn{Conn: under}
	if _, err := (&packets.Puback{PacketID: 1, Properties: &packets.Properties{}}).WriteTo(pc); err != nil {
		t.Fatalf("the packet's own write: %v (the send happens at Unlock)", err)
	}
	if !under.closed {
		t.Fatal("connection not closed after a failed send")
	}
	if _, err := (&packets.Puback{PacketID: 2, Properties: &packets.Properties{}}).WriteTo(pc); err == nil || err.Error() != "broken pipe" {
		t.Fatalf("next packet: %v, want the send's error", err)
	}
}

// recordCounter forwards TCP connections to the local cloud and counts
// the TLS records the clients send, each counted before it is passed on.
type recordCounter struct {
	ln   net.Listener
	sent atomic.Int64
	wg   sync.WaitGroup
}

func newRecordCounter(t *testing.T, target string) *recordCounter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc := &recordCounter{ln: ln}
	t.Cleanup(func() { _ = ln.Close(); rc.wg.Wait() })
	rc.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			rc.wg.Go(func() { _, _ = io.Copy(c, s); _ = c.Close() })
			rc.wg.Go(func() {
				defer s.Close()
				hdr := make([]byte, 5)
				for {
					if _, err := io.ReadFull(c, hdr); err != nil {
						return
					}
					body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
					if _, err := io.ReadFull(c, body); err != nil {
						return
					}
					rc.sent.Add(1)
					if _, err := s.Write(append(hdr, body...)); err != nil {
						return
					}
				}
			})
		}
	})
	return rc
}

// On the wire, each MQTT packet the device sends is one TLS record. A
// request on an open connection sends a SUBSCRIBE and a PUBLISH, both
// through the forwarder before the answer can come back, and the PUBACK
// of the answer just after it: two or three records. paho alone sent
// each packet as three to five records.
func TestOneRecordPerPacketOnTheWire(t *testing.T) {
	dir, srv := cloudtest.Start(t, cloudsim.Options{}, nil)
	rc := newRecordCounter(t, srv.Addr())
	o := Options{Endpoint: rc.ln.Addr().String(), ClaimCertPath: filepath.Join(dir, "claim.pem.crt"), ClaimKeyPath: filepath.Join(dir, "claim.pem.key"),
		RootCAPath: filepath.Join(dir, "AmazonRootCA1.pem")}
	key, err := keystore.NewKey(keystore.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := keystore.CreateCSR(key, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Connected: the CONNECT went through before the CONNACK came back,
	// and nothing more goes out until the request (no PINGREQ at once).
	before := rc.sent.Load()
	if _, err := c.CreateCertificateFromCsr(context.Background(), string(csr)); err != nil {
		t.Fatal(err)
	}
	if got := rc.sent.Load() - before; got < 2 || got > 3 {
		t.Errorf("the device sent %d TLS records for one request; want 2 or 3, one per MQTT packet (SUBSCRIBE, PUBLISH, perhaps already the PUBACK of the answer)", got)
	}
}
