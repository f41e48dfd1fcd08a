package cloudsim

import (
	"testing"
	"time"
)

// CONNECTs over the account's quota get "connection rate exceeded" (3.1.1
// has no such code: server unavailable), before any certificate check.
func TestAccountConnectLimit(t *testing.T) {
	e := startEnv(t, Options{Account: AccountLimits{Connect: RateLimit{Requests: 2, Per: time.Hour}}})
	for range 2 {
		claimConnect(t, e, 5)
	}
	for _, v := range versions() {
		c := e.rawDial(t, e.claimCert(t), v)
		ack := c.connect(connectFields{clientID: randomID(), cleanStart: true, keepAlive: 30})
		want := map[byte]byte{5: 0x9F, 4: 0x03}[v]
		if ack.code != want {
			t.Errorf("%s: CONNACK code 0x%02x over the account's quota, want 0x%02x", vname(v), ack.code, want)
		}
	}
}

// One client id may connect once per second on AWS; the quota counts per
// id, so another id still connects.
func TestClientConnectLimit(t *testing.T) {
	e := startEnv(t, Options{Account: AccountLimits{ConnectPerClient: RateLimit{Requests: 1, Per: time.Hour}}})
	first := e.rawDial(t, e.claimCert(t), 5)
	if ack := first.connect(connectFields{clientID: "same-id", cleanStart: true, keepAlive: 30}); ack.code != 0 {
		t.Fatalf("first CONNECT: %v", ack)
	}
	again := e.rawDial(t, e.claimCert(t), 5)
	if ack := again.connect(connectFields{clientID: "same-id", cleanStart: true, keepAlive: 30}); ack.code != 0x9F {
		t.Errorf("second CONNECT with the same client id: code 0x%02x, want 0x9F", ack.code)
	}
	other := e.rawDial(t, e.claimCert(t), 5)
	if ack := other.connect(connectFields{clientID: "other-id", cleanStart: true, keepAlive: 30}); ack.code != 0 {
		t.Errorf("another client id refused: %v", ack)
	}
}

// Each operation has its own account-wide quota, shared by every
// connection: the third CreateCertificateFromCsr is throttled whoever
// sends it, while RegisterThing still has its own.
func TestOperationLimit(t *testing.T) {
	e := startEnv(t, Options{Account: AccountLimits{Operation: RateLimit{Requests: 2, Per: time.Hour}}})
	a, b := e.dialClaim(t), e.dialClaim(t)
	p := createCert(t, a)
	createCert(t, b)
	res, body := b.call(topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, newKey(t))})
	if res != "rejected" || body["statusCode"] != 429.0 || body["errorCode"] != CodeThrottling {
		t.Errorf("third CreateCertificateFromCsr: %s %v, want rejected 429 %s", res, body, CodeThrottling)
	}
	register(t, a, &p, "oplimit")
}
