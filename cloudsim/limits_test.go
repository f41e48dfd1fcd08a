package cloudsim

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/internal/syncbuf"
)

// A PUBLISH whose fixed header announces 200 MB is refused on its header:
// DISCONNECT 0x95 (packet too large) under MQTT 5, a close under 3.1.1,
// and the broker never allocates the packet.
func TestOversizedPublishRefused(t *testing.T) {
	e := startEnv(t, Options{})
	const announced = 200 << 20
	for _, v := range versions() {
		t.Run(vname(v), func(t *testing.T) {
			c := claimConnect(t, e, v)
			var head bytes.Buffer
			head.WriteByte(ptPublish<<4 | 1<<1)
			head.Write(varint(announced))
			head.Write(mqttString(topicCSR))
			_ = binary.Write(&head, binary.BigEndian, uint16(1))

			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			c.sendRaw(head.Bytes())
			got := c.expectClosed()
			runtime.ReadMemStats(&after)

			if v == 5 {
				if len(got) != 1 || got[0].typ != ptDisconnect || got[0].code != 0x95 {
					t.Errorf("server sent %v before closing, want DISCONNECT 0x95 (packet too large)", got)
				}
			} else if len(got) != 0 {
				t.Errorf("server sent %v to a 3.1.1 client, want a close only", got)
			}
			// Loose: other goroutines allocate too, but never a packet's
			// worth.
			grew := after.TotalAlloc - before.TotalAlloc
			t.Logf("allocated %d KB while refusing a %d MB packet", grew>>10, announced>>20)
			if grew > announced/4 {
				t.Errorf("the broker allocated %d MB while refusing a %d MB packet", grew>>20, announced>>20)
			}
		})
	}
}

// MQTT 5 clients learn the limit from CONNACK (Maximum Packet Size).
func TestConnackAnnouncesMaximumPacketSize(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.rawDial(t, e.claimCert(t), 5)
	ack := c.connect(connectFields{clientID: randomID(), cleanStart: true, keepAlive: 30})
	want := propUint32(0x27, MaxPacketSize)
	if !bytes.Contains(ack.raw, want) {
		t.Errorf("CONNACK %v does not carry Maximum Packet Size %d", ack, MaxPacketSize)
	}
}

// A request payload of exactly AWS IoT's 128 KB reaches the service (here
// refused for its CSR); one byte more is refused for its size, with the
// documented rejection, under both protocol versions.
func TestRequestPayloadLimit(t *testing.T) {
	e := startEnv(t, Options{})
	payload := func(size int) []byte {
		head, tail := `{"certificateSigningRequest":"`, `"}`
		return []byte(head + strings.Repeat("A", size-len(head)-len(tail)) + tail)
	}
	for _, v := range versions() {
		t.Run(vname(v), func(t *testing.T) {
			c := claimConnect(t, e, v)
			for _, tc := range []struct {
				size int
				want string
			}{
				{MaxPayloadSize, "Invalid certificate signing request: "},
				{MaxPayloadSize + 1, "Payload of 131073 bytes is over the 131072-byte limit."},
			} {
				id := c.publish(topicCSR, 1, payload(tc.size), nil)
				c.expectPuback(id)
				res, p := c.answer(topicCSR)
				var rej Rejection
				if err := json.Unmarshal(p.payload, &rej); err != nil {
					t.Fatalf("%d bytes: answer %q: %v", tc.size, p.payload, err)
				}
				if res != "rejected" || rej.StatusCode != 400 || rej.ErrorCode != CodeInvalidPayload || !strings.HasPrefix(rej.ErrorMessage, tc.want) {
					t.Errorf("%d bytes: answered %s %+v, want rejected 400 InvalidPayload %q", tc.size, res, rej, tc.want)
				}
			}
		})
	}
}

// A connection that finishes no TLS handshake, or no CONNECT, is closed
// once the deadline passes; a client that connected in time is not.
func TestConnectDeadline(t *testing.T) {
	const timeout = 2 * time.Second
	var logs syncbuf.Buffer
	e := startEnv(t, Options{ConnectTimeout: timeout, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	connected := claimConnect(t, e, 5)

	start := time.Now()
	tcp, err := net.DialTimeout("tcp", e.srv.Addr(), waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	tlsOnly, err := tls.DialWithDialer(&net.Dialer{Timeout: waitLimit}, "tcp", e.srv.Addr(), e.tlsConfig(t, e.claimCert(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer tlsOnly.Close()

	for name, c := range map[string]net.Conn{"no TLS handshake": tcp, "no CONNECT": tlsOnly} {
		if err := expectServerClose(c); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if elapsed := time.Since(start); elapsed < timeout/2 {
		t.Errorf("closed after %v, before the %v deadline", elapsed, timeout)
	}
	connected.alive()
	// Each connection's goroutine logs after the close the client saw:
	// wait for both lines, as long as a stuck test would.
	const want = `level=INFO msg="connection closed: no TLS handshake and CONNECT within the deadline"`
	deadline := time.Now().Add(waitLimit)
	for strings.Count(logs.String(), want) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), want); n != 2 {
		t.Errorf("the log has %d lines %s, want 2:\n%s", n, want, logs.String())
	}
}

// Close ends connections still waiting for their CONNECT at once, however
// many, rather than leaving them to the deadline.
func TestCloseEndsIdleConnections(t *testing.T) {
	e := startEnv(t, Options{ConnectTimeout: time.Hour})
	const plain, handshaken = 200, 20
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	for i := 0; i < plain; i++ {
		c, err := net.DialTimeout("tcp", e.srv.Addr(), waitLimit)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for i := 0; i < handshaken; i++ {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: waitLimit}, "tcp", e.srv.Addr(), e.tlsConfig(t, e.claimCert(t)))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// Every connection accepted, so that none is still in the kernel's
	// queue when the listener closes.
	deadline := time.Now().Add(waitLimit)
	for e.srv.listener.waiting() < plain+handshaken {
		if time.Now().After(deadline) {
			t.Fatalf("the server accepted %d of %d connections", e.srv.listener.waiting(), plain+handshaken)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// mochi's own shutdown waits for every connection's goroutine,
	// those still reading a CONNECT included.
	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- e.srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitLimit):
		t.Fatalf("Close has not returned after %v with %d idle connections", waitLimit, len(conns))
	}
	t.Logf("Close took %v with %d idle connections", time.Since(start), len(conns))
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	for _, c := range conns {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			errs <- expectServerClose(c)
		}(c)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("after Close: %v", err)
		}
	}
}

// expectServerClose reads until the server closes c, and fails if it
// sends anything or keeps it open for waitLimit.
func expectServerClose(c net.Conn) error {
	if err := c.SetReadDeadline(time.Now().Add(waitLimit)); err != nil {
		return err
	}
	var b [1]byte
	n, err := c.Read(b[:])
	switch {
	case n > 0:
		return errors.New("the server sent data to a connection that sent no CONNECT")
	case errors.Is(err, io.EOF) || isClosedConn(err):
		return nil
	case err != nil && !isTimeout(err):
		// A TLS alert (the server gave up mid-handshake) is a close too.
		return nil
	default:
		return errors.New("the server kept the connection open")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A token in a packet the broker refuses as malformed (a wildcard in a
// PUBLISH topic name) never reaches the log, in any rendering a handler
// gives bytes, though the refusal does.
func TestBrokerLogKeepsPacketsOut(t *testing.T) {
	const token = "tok-3b1f8c9e-secret-ownership-token"
	leaks := map[string]string{
		"as text":   token,
		"in base64": base64.StdEncoding.EncodeToString([]byte(token)),
		"in hex":    hex.EncodeToString([]byte(token)),
		"as bytes":  strings.Trim(fmt.Sprint([]byte(token)), "[]"),
	}
	handlers := map[string]func(io.Writer) slog.Handler{
		"text": func(w io.Writer) slog.Handler {
			return slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
		},
		"json": func(w io.Writer) slog.Handler {
			return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
		},
	}
	for format, newHandler := range handlers {
		for _, v := range versions() {
			t.Run(format+"/"+vname(v), func(t *testing.T) {
				var logs syncbuf.Buffer
				e := startEnv(t, Options{Logger: slog.New(newHandler(&logs))})
				c := claimConnect(t, e, v)
				c.publish("$aws/provisioning-templates/#/provision/json", 1, []byte(token), nil)
				c.expectClosed()
				// Close waits for every connection's goroutine, so the
				// broker's record is written by then.
				_ = e.srv.Close()
				out := logs.String()
				if !strings.Contains(out, "error processing packet") {
					t.Fatalf("the broker did not log the refusal; log:\n%s", out)
				}
				for how, leak := range leaks {
					if strings.Contains(out, leak) {
						t.Errorf("the log holds the packet's payload %s:\n%s", how, out)
					}
				}
				if !strings.Contains(out, "PUBLISH id 1 (contents not logged)") {
					t.Errorf("the log does not name the refused packet:\n%s", out)
				}
			})
		}
	}
}

// The framer finds an oversized header wherever reads split the stream.
func TestFramerFindsOversizedHeader(t *testing.T) {
	small := append([]byte{ptPingreq << 4}, 0)
	body := bytes.Repeat([]byte{'x'}, 300)
	mid := append(append([]byte{ptPublish << 4}, varint(len(body))...), body...)
	huge := append([]byte{ptPublish << 4}, varint(MaxPacketSize)...)
	atLimit := append([]byte{ptPublish << 4}, varint(MaxPacketSize-1)...)
	stream := concat(small, mid, small, huge)
	for _, chunk := range []int{1, 2, 3, 7, 64, len(stream)} {
		var f framer
		at, off := -1, 0
		for off < len(stream) && at < 0 {
			end := min(off+chunk, len(stream))
			if o := f.feed(stream[off:end]); o >= 0 {
				at = off + o
			}
			off = end
		}
		want := len(small) + len(mid) + len(small)
		// A header split across reads is caught in the read that ends it;
		// what mochi already has of it cannot be taken back.
		if at < want || at > want+len(huge) {
			t.Errorf("chunks of %d: oversized packet found at %d, want %d", chunk, at, want)
		}
	}
	var f framer
	if o := f.feed(concat(small, atLimit)); o >= 0 {
		t.Errorf("a packet of exactly MaxPacketSize was refused at %d", o)
	}
}
