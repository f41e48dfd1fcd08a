package cloudsim

import (
	"errors"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// By default a client that publishes without subscribing gets its answer
// (Greengrass nucleus lite never subscribes, and AWS IoT answers it); with
// StrictDelivery it does not, while a subscribed client still does.
func TestStrictDelivery(t *testing.T) {
	for _, strict := range []bool{false, true} {
		e := startEnv(t, Options{StrictDelivery: strict})
		lone := e.dialClaim(t)
		_, _, err := lone.callWait(topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, newKey(t))}, time.Second)
		switch {
		case !strict && err != nil:
			t.Errorf("default delivery: a client that did not subscribe got no answer: %v", err)
		case strict && !errors.Is(err, errNoAnswer):
			t.Errorf("strict delivery: a client that did not subscribe was answered (err %v)", err)
		}
		subscribed := e.dialClaim(t)
		if err := subscribed.subscribe(topicCSR + "/accepted"); err != nil {
			t.Fatal(err)
		}
		if p := createCert(t, subscribed); p.certID == "" {
			t.Errorf("strict=%v: subscribed client not answered", strict)
		}
	}
}

// With SingleUseTokens a token registers once; the default lets the same
// device repeat the call (TestRegisterThingIsIdempotentPerToken).
func TestSingleUseTokens(t *testing.T) {
	e := startEnv(t, Options{SingleUseTokens: true})
	c := e.dialClaim(t)
	p := createCert(t, c)
	register(t, c, &p, "51_46_00_00_00_01")
	res, body := c.call(topicRegister, map[string]any{"certificateOwnershipToken": p.token, "parameters": map[string]any{"SerialNumber": "51_46_00_00_00_01"}})
	if res != "rejected" || body["statusCode"] != 400.0 || body["errorCode"] != CodeInvalidCertificateOwnershipToken ||
		body["errorMessage"] != "Certificate ownership token has already been used." {
		t.Errorf("second use of a single-use token: %s %v", res, body)
	}
}

// A connection over its rate limit is answered 429 ThrottlingException and
// nothing is created; another connection has its own allowance.
func TestRateLimit(t *testing.T) {
	clk := newClock()
	e := startEnv(t, Options{RateLimit: RateLimit{Requests: 2, Per: time.Minute}, Now: clk.now})
	c := e.dialClaim(t)
	createCert(t, c)
	createCert(t, c)
	res, body := c.call(topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, newKey(t))})
	if res != "rejected" || body["statusCode"] != 429.0 || body["errorCode"] != "ThrottlingException" || body["errorMessage"] != "Rate exceeded." {
		t.Errorf("third request in a minute: %s %v, want 429 ThrottlingException", res, body)
	}
	other := e.dialClaim(t)
	createCert(t, other)
	clk.advance(31 * time.Second) // one request's worth refilled
	createCert(t, c)
	reg, _ := ReadRegistry(e.dir)
	if len(reg.Certificates) != 5 {
		t.Errorf("%d certificates, want the claim and 4: a throttled request creates none", len(reg.Certificates))
	}
}

func TestParseRateLimit(t *testing.T) {
	if l, err := ParseRateLimit("5/1s"); err != nil || l != (RateLimit{Requests: 5, Per: time.Second}) || l.String() != "5/1s" {
		t.Errorf("ParseRateLimit(5/1s) = %v, %v", l, err)
	}
	for spec, want := range map[string]string{
		"5":     `rate limit "5": want N/DURATION with N >= 1, e.g. 5/1s`,
		"0/1s":  `rate limit "0/1s": want N/DURATION with N >= 1, e.g. 5/1s`,
		"5/now": `rate limit "5/now": want N/DURATION with a positive duration, e.g. 5/1s`,
	} {
		if _, err := ParseRateLimit(spec); err == nil || err.Error() != want {
			t.Errorf("ParseRateLimit(%q) error %v, want %s", spec, err, want)
		}
	}
}

// Fault injection covers CreateKeysAndCertificate like the other
// operations.
func TestFaultsCreateKeysAndCertificate(t *testing.T) {
	rej, _ := ParseFault("CreateKeysAndCertificate:reject=503/ServiceUnavailable:times=1")
	lost, _ := ParseFault("CreateKeysAndCertificate:drop=answer:times=1")
	e := startEnv(t, Options{Faults: []Fault{rej, lost}})
	c := e.dialClaim(t)
	res, body := c.call(topicCreateJSON, "{}")
	if res != "rejected" || body["statusCode"] != 503.0 || body["errorCode"] != "ServiceUnavailable" {
		t.Errorf("injected reject: %s %v", res, body)
	}
	if _, _, err := c.callWait(topicCreateJSON, "{}", time.Second); !errors.Is(err, errNoAnswer) {
		t.Errorf("drop=answer: answered (%v)", err)
	}
	// The dropped answer's work may still be running (an RSA key takes a
	// while on a busy machine): wait for it as long as a stuck test would.
	var reg *Registry
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(20 * time.Millisecond) {
		reg, _ = ReadRegistry(e.dir)
		if (reg != nil && len(reg.Certificates) >= 2) || time.Now().After(deadline) {
			break
		}
	}
	if reg == nil || len(reg.Certificates) != 2 {
		t.Errorf("registry %v, want the claim and the certificate whose answer was lost", reg)
	}
	if res, body := c.call(topicCreateJSON, "{}"); res != "accepted" {
		t.Errorf("after the faults ran out: %s %v", res, body)
	}
}

// Close returns while clients are disconnecting on their own: `cloud
// serve` must stop on SIGTERM even as a fleet is leaving. mochi's own
// shutdown can deadlock in exactly this moment (see closeClients); the
// window is narrow, so this guards the path rather than reproducing the
// hang every time (it hung a full -race run of ./... on 2 cores).
func TestCloseWhileClientsLeave(t *testing.T) {
	for round := range 3 {
		e := startEnv(t, Options{})
		var clients []*client
		for range 30 {
			clients = append(clients, e.dialClaim(t))
		}
		for _, c := range clients {
			go func() { _ = c.pc.Disconnect(&paho.Disconnect{}) }()
		}
		done := make(chan error, 1)
		go func() { done <- e.srv.Close() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Close hung while clients disconnected", round)
		}
	}
}
