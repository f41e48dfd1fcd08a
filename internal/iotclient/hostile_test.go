package iotclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	mpackets "github.com/mochi-mqtt/server/v2/packets"

	"github.com/eclipse/paho.golang/packets"

	"github.com/fleetprov/fleetprov/failure"
)

const (
	csrAccepted  = "$aws/certificates/create-from-csr/json/accepted"
	keysAccepted = "$aws/certificates/create/json/accepted"
	regAccepted  = "$aws/provisioning-templates/GreengrassFleetProvisioningTemplate/provision/json/accepted"
)

// A cloud that answers with something a device must not keep: every such
// answer is a fatal error naming the field, and no result comes back.
func TestHostileCertificateAnswersAreRefused(t *testing.T) {
	now := time.Now()
	// The device clock, fixed so that messages quoting it are known.
	w := newWorldWith(t, func(o *Options) { o.Now = func() time.Time { return now } })
	clock := now.UTC().Format(time.RFC3339)
	expiredPEM, expiredID := testDevice.issue(&testDevice.key.PublicKey, now.Add(-48*time.Hour), now.Add(-time.Hour))
	futurePEM, futureID := testDevice.issue(&testDevice.key.PublicKey, now.Add(time.Hour), now.Add(48*time.Hour))
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherPEM, otherID := testDevice.issue(&other.PublicKey, now.Add(-time.Hour), now.Add(time.Hour))
	secondPEM, _ := testDevice.issue(&testDevice.key.PublicKey, now.Add(-time.Hour), now.Add(time.Hour))
	badDER := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}}))
	big := strings.Repeat("A", maxCertificatePEM+1)
	long := strings.Repeat("b", 100)

	pre := "iotclient: CreateCertificateFromCsr: refused answer on " + csrAccepted + ": "
	tests := []struct {
		name, id, certPEM, token, want string
	}{
		{"second certificate appended", testCertID, testDevice.certPEM + secondPEM, testToken,
			pre + "certificatePem holds more than one PEM block; want exactly one certificate"},
		{"expired", expiredID, expiredPEM, testToken,
			pre + fmt.Sprintf("certificatePem expired at %s (device clock %s)", certTime(t, expiredPEM, false), clock)},
		{"not yet valid", futureID, futurePEM, testToken,
			pre + fmt.Sprintf("certificatePem is not valid before %s (device clock %s)", certTime(t, futurePEM, true), clock)},
		{"for another key", otherID, otherPEM, testToken,
			pre + "certificatePem is not for the device key in the CSR (their public keys differ)"},
		{"id not the certificate's", strings.Repeat("0", 64), testDevice.certPEM, testToken,
			pre + `certificateId "` + strings.Repeat("0", 64) + `" is not the certificate's SHA-256 (` + testCertID + ")"},
		{"id with escape codes", "\x1b[2J\nforged line", testDevice.certPEM, testToken,
			pre + `certificateId "\x1b[2J\nforged line" is not 64 lowercase hex digits`},
		{"id too long", long, testDevice.certPEM, testToken,
			pre + `certificateId "` + long[:quoteLimit] + `"... (100 bytes) is not 64 lowercase hex digits`},
		{"certificate over its limit", testCertID, big, testToken,
			pre + "certificatePem is 16385 bytes, over the 16384-byte limit"},
		{"certificate does not parse", testCertID, badDER, testToken,
			pre + "certificatePem does not parse: " + parseErr(badDER)},
		{"token over its limit", testCertID, testDevice.certPEM, strings.Repeat("t", maxOwnershipToken+1),
			pre + "certificateOwnershipToken is 4097 bytes, over the 4096-byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.aws.setReply(func(request) (string, []byte, bool) {
				return "accepted", mustJSON(map[string]string{"certificateId": tt.id, "certificatePem": tt.certPEM, "certificateOwnershipToken": tt.token}), true
			})
			res, err := w.cl.CreateCertificateFromCsr(reqCtx(t, 60*time.Second), testCSR)
			checkRefused(t, res, err, tt.want)
		})
	}
	// A cloud clock a little ahead of the device's is allowed for.
	skewedPEM, skewedID := testDevice.issue(&testDevice.key.PublicKey, now.Add(2*time.Minute), now.Add(48*time.Hour))
	w.aws.setReply(func(request) (string, []byte, bool) {
		return "accepted", mustJSON(map[string]string{"certificateId": skewedID, "certificatePem": skewedPEM, "certificateOwnershipToken": testToken}), true
	})
	if _, err := w.cl.CreateCertificateFromCsr(reqCtx(t, 60*time.Second), testCSR); err != nil {
		t.Errorf("a certificate valid from 2 minutes ahead of the device clock: %v", err)
	}
}

func TestHostileKeysAnswersAreRefused(t *testing.T) {
	w := newWorld(t)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherPEM, otherID := testDevice.issue(&other.PublicKey, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	badKey := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("secret key bytes")}))
	pre := "iotclient: CreateKeysAndCertificate: refused answer on " + keysAccepted + ": "
	tests := []struct{ name, id, certPEM, key, want string }{
		{"certificate not for the key", otherID, otherPEM, testDevice.keyPEM,
			pre + "certificatePem is not for the privateKey sent with it (their public keys differ)"},
		{"key does not parse", testCertID, testDevice.certPEM, badKey,
			pre + "privateKey (EC PRIVATE KEY) does not parse"},
		{"two keys", testCertID, testDevice.certPEM, testDevice.keyPEM + testDevice.keyPEM,
			pre + "privateKey holds more than one PEM block; want exactly one key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.aws.setReply(func(request) (string, []byte, bool) {
				return "accepted", mustJSON(map[string]string{"certificateId": tt.id, "certificatePem": tt.certPEM, "privateKey": tt.key, "certificateOwnershipToken": testToken}), true
			})
			res, err := w.cl.CreateKeysAndCertificate(reqCtx(t, 60*time.Second))
			checkRefused(t, res, err, tt.want)
			if strings.Contains(err.Error(), "secret key bytes") || strings.Contains(err.Error(), "PRIVATE KEY-----") {
				t.Errorf("error quotes the private key: %v", err)
			}
		})
	}
}

func TestHostileRegistrationAnswersAreRefused(t *testing.T) {
	w := newWorld(t)
	pre := "iotclient: RegisterThing: refused answer on " + regAccepted + ": "
	rule := " is not 1-128 characters of a-z A-Z 0-9 : _ -"
	manyKeys := map[string]string{}
	for i := range maxDeviceConfigKeys + 1 {
		manyKeys[fmt.Sprintf("k%d", i)] = "v"
	}
	name200 := strings.Repeat("n", 200)
	tests := []struct {
		name  string
		thing string
		conf  map[string]string
		want  string
	}{
		{"path in thing name", "../../etc/evil", nil, pre + `thingName "../../etc/evil"` + rule},
		{"escape codes and newline in thing name", "gg\x1b[31m\nstate: Done", nil, pre + `thingName "gg\x1b[31m\nstate: Done"` + rule},
		{"thing name of 200 characters", name200, nil, pre + `thingName "` + name200[:quoteLimit] + `"... (200 bytes)` + rule},
		{"MQTT wildcards in thing name", "$aws/things/+/#", nil, pre + `thingName "$aws/things/+/#"` + rule},
		{"too many device configuration keys", "thing1", manyKeys, pre + "deviceConfiguration has 65 keys, over the limit of 64"},
		{"device configuration value over its limit", "thing1", map[string]string{"FallbackUrl": strings.Repeat("u", maxDeviceConfigVal+1)},
			pre + `deviceConfiguration value of "FallbackUrl" is 4097 bytes, over the 4096-byte limit`},
		{"control character in a device configuration key", "thing1", map[string]string{"a\nb": "v"},
			pre + `deviceConfiguration key "a\nb" holds a control character`},
		{"empty device configuration key", "thing1", map[string]string{"": "v"},
			pre + `deviceConfiguration key "" is not 1-128 bytes`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.aws.setReply(func(request) (string, []byte, bool) {
				return "accepted", mustJSON(map[string]any{"thingName": tt.thing, "deviceConfiguration": tt.conf}), true
			})
			res, err := w.cl.RegisterThing(reqCtx(t, 60*time.Second), testTemplate, testToken, nil)
			checkRefused(t, res, err, tt.want)
		})
	}
	// AWS's rule admits these.
	w.aws.setReply(func(request) (string, []byte, bool) {
		return "accepted", mustJSON(map[string]any{"thingName": "a:B_c-9" + strings.Repeat("x", 121)}), true
	})
	if _, err := w.cl.RegisterThing(reqCtx(t, 60*time.Second), testTemplate, testToken, nil); err != nil {
		t.Errorf("a 128-character thing name of allowed characters: %v", err)
	}
}

// A rejection's errorCode and errorMessage are bounded and quoted: 100 KB
// of escape codes prints as a short, single line.
func TestHostileRejectionIsBoundedAndQuoted(t *testing.T) {
	w := newWorld(t)
	code := "Bad\x1b[2J\n" + strings.Repeat("C", 10<<10)
	msg := "fine\nfleetprov: provisioned\x1b[0m" + strings.Repeat("M", 100<<10)
	w.aws.setReply(func(request) (string, []byte, bool) {
		return "rejected", mustJSON(map[string]any{"statusCode": 400, "errorCode": code, "errorMessage": msg}), true
	})
	_, err := w.cl.RegisterThing(reqCtx(t, 60*time.Second), testTemplate, testToken, nil)
	var rej *Rejection
	if !errors.As(err, &rej) {
		t.Fatalf("err = %v, want a Rejection", err)
	}
	want := fmt.Sprintf("RegisterThing rejected: statusCode=400 errorCode=%q errorMessage=%q",
		code[:maxErrorCode]+fmt.Sprintf("... (%d bytes)", len(code)), msg[:maxErrorMessage]+fmt.Sprintf("... (%d bytes)", len(msg)))
	if err.Error() != want {
		t.Errorf("message:\n got %.300s\nwant %.300s", err.Error(), want)
	}
	if s := err.Error(); strings.ContainsAny(s, "\n\x1b") || len(s) > 2*(maxErrorCode+maxErrorMessage) {
		t.Errorf("message of %d bytes holds a newline or escape", len(s))
	}
	if logs := w.logs.String(); strings.Contains(logs, "\x1b") || len(logs) > 64*1024 {
		t.Errorf("logs hold an escape code or grew to %d bytes", len(logs))
	}
}

// The client announces its maximum packet size, and the broker (mochi
// honours it, as AWS IoT does) does not deliver a larger answer: the
// request times out without the answer ever reaching the device.
func TestAnnouncesMaximumPacketSize(t *testing.T) {
	p := newPKI(t)
	aws := startBroker(t, p.serverTLS(t))
	seen := make(chan uint32, 1)
	if err := aws.srv.AddHook(&connectSpy{seen: seen}, nil); err != nil {
		t.Fatal(err)
	}
	logger, logs := debugLogger()
	cl, err := Dial(context.Background(), p.options(aws.addr, logger))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	select {
	case got := <-seen:
		if got != MaxPacketSize {
			t.Errorf("CONNECT Maximum Packet Size = %d, want %d", got, MaxPacketSize)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no CONNECT seen")
	}
	aws.setReply(func(request) (string, []byte, bool) {
		return "accepted", mustJSON(map[string]string{"certificateId": testCertID, "certificatePem": strings.Repeat("A", 10<<20), "certificateOwnershipToken": testToken}), true
	})
	_, err = cl.CreateCertificateFromCsr(reqCtx(t, 2*time.Second), testCSR)
	if err == nil || !failure.IsTransient(err) || !strings.Contains(err.Error(), "no answer on "+csrAccepted) {
		t.Fatalf("err = %v, want a transient no-answer error", err)
	}
	if strings.Contains(logs.String(), "answer received") {
		t.Errorf("the oversized answer reached the client")
	}
}

type connectSpy struct {
	mqtt.HookBase
	seen chan uint32
}

func (*connectSpy) ID() string           { return "connect-spy" }
func (*connectSpy) Provides(b byte) bool { return b == mqtt.OnConnect }
func (s *connectSpy) OnConnect(cl *mqtt.Client, pk mpackets.Packet) error {
	if !cl.Net.Inline {
		select {
		case s.seen <- pk.Properties.MaximumPacketSize:
		default:
		}
	}
	return nil
}

// A server that ignores the announced size and streams a 10 MB answer is
// cut off at the packet's header: the request fails fatally, naming the
// sizes, and the process does not grow by the packet's size.
func TestOversizedPacketFromAServerIsRefused(t *testing.T) {
	p := newPKI(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", p.serverTLS(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	const size = 10 << 20
	go hostileServer(ln, size)

	cl, err := Dial(context.Background(), p.options(ln.Addr().String(), nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := cl.CreateCertificateFromCsr(reqCtx(t, 60*time.Second), testCSR)
	runtime.ReadMemStats(&after)
	if res != nil {
		t.Fatalf("got a result: %+v", res)
	}
	var tooLarge *PacketTooLargeError
	if !errors.As(err, &tooLarge) || failure.IsTransient(err) {
		t.Fatalf("err = %v, want a fatal PacketTooLargeError", err)
	}
	// The PUBLISH: fixed header (1 type byte, 4 length bytes) + the rest.
	want := fmt.Sprintf("iotclient: CreateCertificateFromCsr: answer refused: the server sent a packet of %d bytes, over the %d-byte maximum this device announced", tooLarge.Size, MaxPacketSize)
	if err.Error() != want || tooLarge.Size < size {
		t.Errorf("error:\n got %v\nwant %s (size >= %d)", err, want, size)
	}
	t.Logf("allocated %d bytes while refusing a %d-byte packet", after.TotalAlloc-before.TotalAlloc, size)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > size/2 {
		t.Errorf("allocated %d bytes while refusing a %d-byte packet", grew, size)
	}
}

// A payload over AWS's 128 KB cap in a packet just under the announced
// size is dropped by the client: the request sees no answer.
func TestPayloadOverTheCapIsDropped(t *testing.T) {
	p := newPKI(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", p.serverTLS(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go hostileServer(ln, MaxPayload+1)

	logger, logs := debugLogger()
	cl, err := Dial(context.Background(), p.options(ln.Addr().String(), logger))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	res, err := cl.CreateCertificateFromCsr(reqCtx(t, 2*time.Second), testCSR)
	if res != nil || err == nil || !failure.IsTransient(err) || !strings.Contains(err.Error(), "no answer on "+csrAccepted) {
		t.Fatalf("res = %v, err = %v, want a transient no-answer error", res, err)
	}
	if !strings.Contains(logs.String(), `msg="dropping a message over the payload limit"`) || strings.Contains(logs.String(), "answer received") {
		t.Errorf("the over-cap payload was not dropped:\n%s", logs.String())
	}
}

// hostileServer speaks just enough MQTT 5 for one request, then answers it
// with a PUBLISH whose payload is size bytes, streamed.
func hostileServer(ln net.Listener, size int) {
	conn, err := ln.Accept()
	if err != nil {
		return
	}
	defer conn.Close()
	for {
		cp, err := packets.ReadPacket(conn)
		if err != nil {
			return
		}
		switch pk := cp.Content.(type) {
		case *packets.Connect:
			ack := packets.NewControlPacket(packets.CONNACK)
			if _, err := ack.WriteTo(conn); err != nil {
				return
			}
		case *packets.Subscribe:
			ack := packets.NewControlPacket(packets.SUBACK)
			ack.Content.(*packets.Suback).PacketID = pk.PacketID
			ack.Content.(*packets.Suback).Reasons = make([]byte, len(pk.Subscriptions))
			if _, err := ack.WriteTo(conn); err != nil {
				return
			}
		case *packets.Publish:
			ack := packets.NewControlPacket(packets.PUBACK)
			ack.Content.(*packets.Puback).PacketID = pk.PacketID
			if _, err := ack.WriteTo(conn); err != nil {
				return
			}
			topic := pk.Topic + "/accepted"
			// Variable header: topic, no packet id (QoS 0), empty properties.
			vh := append([]byte{byte(len(topic) >> 8), byte(len(topic))}, topic...)
			vh = append(vh, 0)
			hdr := append([]byte{0x30}, varint(len(vh)+size)...)
			if _, err := conn.Write(append(hdr, vh...)); err != nil {
				return
			}
			chunk := make([]byte, 64<<10)
			for sent := 0; sent < size; sent += len(chunk) {
				if _, err := conn.Write(chunk[:min(len(chunk), size-sent)]); err != nil {
					return
				}
			}
			_, _ = io.Copy(io.Discard, conn)
			return
		}
	}
}

func varint(n int) []byte {
	var b []byte
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

func checkRefused(t *testing.T, res any, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted: %+v", res)
	}
	if err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
	if failure.IsTransient(err) {
		t.Errorf("a refused answer must be fatal, got transient")
	}
	if res != nil && !isNilResult(res) {
		t.Errorf("a refused answer returned a result: %+v", res)
	}
}

func isNilResult(v any) bool {
	switch r := v.(type) {
	case *CertificateResult:
		return r == nil
	case *KeysResult:
		return r == nil
	case *RegistrationResult:
		return r == nil
	}
	return false
}

func certTime(t *testing.T, certPEM string, notBefore bool) string {
	t.Helper()
	blk, _ := pem.Decode([]byte(certPEM))
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if notBefore {
		return c.NotBefore.UTC().Format(time.RFC3339)
	}
	return c.NotAfter.UTC().Format(time.RFC3339)
}

func parseErr(certPEM string) string {
	blk, _ := pem.Decode([]byte(certPEM))
	_, err := x509.ParseCertificate(blk.Bytes)
	return err.Error()
}

// The length limits hold at their edges, apart from the character rules.
func TestNameAndIDLengthEdges(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want bool
	}{{"", false}, {"n", true}, {strings.Repeat("n", 128), true}, {strings.Repeat("n", 129), false}} {
		if got := validThingName(tc.s); got != tc.want {
			t.Errorf("validThingName(%d characters) = %v, want %v", len(tc.s), got, tc.want)
		}
	}
	for _, tc := range []struct {
		s    string
		want bool
	}{{strings.Repeat("a", 63), false}, {strings.Repeat("a", 64), true}, {strings.Repeat("a", 65), false}, {strings.Repeat("A", 64), false}} {
		if got := validCertificateID(tc.s); got != tc.want {
			t.Errorf("validCertificateID(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}
