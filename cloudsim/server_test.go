package cloudsim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/fleetprov/fleetprov/internal/syncbuf"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestProvisionEndToEnd(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	if err := c.subscribe(topicCSR+"/accepted", topicCSR+"/rejected", topicRegister+"/accepted", topicRegister+"/rejected"); err != nil {
		t.Fatalf("claim may subscribe to the response topics: %v", err)
	}

	key := newKey(t)
	res, body := c.call(topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, key)})
	if res != "accepted" {
		t.Fatalf("CreateCertificateFromCsr %s: %v", res, body)
	}
	if got, want := keysOf(body), shapeKeys(t, "docs-payload-CreateCertificateFromCsr.accepted.jsonish"); !reflect.DeepEqual(got, want) {
		t.Errorf("accepted keys %v, docs say %v", got, want)
	}
	certID := body["certificateId"].(string)
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(certID) {
		t.Errorf("certificateId %q is not 64 hex characters", certID)
	}
	block, _ := pem.Decode([]byte(body["certificatePem"].(string)))
	if block == nil {
		t.Fatal("certificatePem is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if CertificateID(cert.Raw) != certID {
		t.Errorf("certificateId is not the SHA-256 of the certificate")
	}
	rootPEM, _ := os.ReadFile(filepath.Join(e.dir, "AmazonRootCA1.pem"))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("device certificate does not verify against AmazonRootCA1.pem: %v", err)
	}
	if !cert.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Errorf("certificate is not for the CSR's key")
	}
	reg, _ := ReadRegistry(e.dir)
	if got := reg.Certificates[certID].Status; got != StatusPendingActivation {
		t.Errorf("new certificate is %s, want PENDING_ACTIVATION", got)
	}

	res, body = c.call(topicRegister, map[string]any{
		"certificateOwnershipToken": body["certificateOwnershipToken"],
		"parameters":                map[string]any{"SerialNumber": "a2_b9_d2_5a_fd_f9"},
	})
	if res != "accepted" {
		t.Fatalf("RegisterThing %s: %v", res, body)
	}
	if got, want := keysOf(body), shapeKeys(t, "docs-payload-RegisterThing.accepted.jsonish"); !reflect.DeepEqual(got, want) {
		t.Errorf("accepted keys %v, docs say %v", got, want)
	}
	if body["thingName"] != "gg_a2_b9_d2_5a_fd_f9" {
		t.Errorf("thingName %v, want gg_a2_b9_d2_5a_fd_f9", body["thingName"])
	}
	if dc, ok := body["deviceConfiguration"].(map[string]any); !ok || len(dc) != 0 {
		t.Errorf("deviceConfiguration %v, want an empty object", body["deviceConfiguration"])
	}

	reg, err = ReadRegistry(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	thing := reg.Things["gg_a2_b9_d2_5a_fd_f9"]
	if thing == nil {
		t.Fatalf("thing not in registry: %v", reg.Things)
	}
	if !reflect.DeepEqual(thing.Groups, []string{"GreengrassDevices"}) || !reflect.DeepEqual(thing.Principals, []string{certID}) {
		t.Errorf("thing groups %v principals %v", thing.Groups, thing.Principals)
	}
	rc := reg.Certificates[certID]
	if rc.Status != StatusActive || rc.ThingName != thing.Name {
		t.Errorf("certificate %s for %q, want ACTIVE for the thing", rc.Status, rc.ThingName)
	}
	wantPolicies := []string{"GreengrassV2IoTThingPolicy-GreengrassFleetProvisioning", "GreengrassV2TokenExchangeRoleAliasPolicy-GreengrassFleetProvisioning"}
	if !reflect.DeepEqual(rc.Policies, wantPolicies) {
		t.Errorf("policies %v, want %v", rc.Policies, wantPolicies)
	}

	// The device can now connect with its own certificate and do anything.
	dev, err := e.dial(t, tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key})
	if err != nil {
		t.Fatalf("device certificate refused: %v", err)
	}
	if _, err := dev.publish("devices/gg_a2_b9_d2_5a_fd_f9/telemetry", []byte("{}")); err != nil {
		t.Errorf("device publish refused: %v", err)
	}
}

func TestClaimLimitedToProvisioningTopics(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	resp, err := c.publish("devices/x/telemetry", []byte("{}"))
	if err == nil || resp == nil || resp.ReasonCode != 0x87 {
		t.Errorf("claim publish elsewhere: resp %+v err %v, want PUBACK 0x87 not authorized", resp, err)
	}
	if err := c.subscribe("devices/#"); err == nil {
		t.Errorf("claim subscribe to devices/# allowed")
	}
	if err := c.subscribe("$aws/things/x/shadow/get/accepted"); err == nil {
		t.Errorf("claim subscribe to a shadow topic allowed")
	}
	// The connection survives a refused publish and still provisions.
	p := createCert(t, c)
	if p.certID == "" {
		t.Fatal("no certificate after refused publish")
	}
}

func TestForeignCertificateCannotConnect(t *testing.T) {
	e := startEnv(t, Options{})
	// The claim's chain, verified once, is remembered; that must not let
	// another certificate through.
	e.dialClaim(t)
	// A CA that is not the emulator's, and a certificate it signed.
	other, err := newAuthority(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	cert, err := other.issue(key.Public(), pkix.Name{CommonName: "intruder"}, nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.dial(t, tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key}); err == nil {
		t.Fatal("a certificate from another CA connected")
	}
	// And no certificate at all.
	if _, err := e.dial(t, tls.Certificate{}); err == nil {
		t.Fatal("a client without certificate connected")
	}
}

func TestUnregisteredCertificatesCannotConnect(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	p := createCert(t, c)
	// AWS IoT refuses a certificate that is not ACTIVE in the TLS
	// handshake, before any MQTT; a device's probe after a lost
	// registration answer relies on it. Under TLS 1.2 the verdict
	// arrives within the client's handshake.
	handshake := func(cert tls.Certificate) error {
		cfg := e.tlsConfig(t, cert)
		cfg.MaxVersion = tls.VersionTLS12
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: waitLimit}, "tcp", e.srv.Addr(), cfg)
		if err == nil {
			_ = conn.Close()
		}
		return err
	}
	const refused = "remote error: tls: bad certificate"
	if err := handshake(p.tlsCert(t)); err == nil || !strings.Contains(err.Error(), refused) {
		t.Errorf("PENDING_ACTIVATION certificate: handshake err %v, want %q", err, refused)
	}
	if _, err := e.dial(t, p.tlsCert(t)); err == nil {
		t.Errorf("PENDING_ACTIVATION certificate connected")
	}
	register(t, c, &p, "SN-DEACTIVATED")
	if err := handshake(p.tlsCert(t)); err != nil {
		t.Fatalf("ACTIVE certificate refused: %v", err)
	}
	e.setCertStatus(t, p.certID, StatusInactive)
	if err := handshake(p.tlsCert(t)); err == nil || !strings.Contains(err.Error(), refused) {
		t.Errorf("INACTIVE certificate: handshake err %v, want %q", err, refused)
	}
	// Signed by the CA but never issued through the API: unknown to the registry.
	key := newKey(t)
	cert, err := e.srv.ca.issue(key.Public(), pkix.Name{CommonName: "forged"}, nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.dial(t, tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key}); err == nil {
		t.Errorf("a certificate unknown to the registry connected")
	}
}

// Fifty devices provision at once through one claim; each must hear only
// its own answers, including one that never subscribed, and an eavesdropper
// subscribed to the answer topics must hear nothing.
func TestAnswersReachOnlyTheRequester(t *testing.T) {
	e := startEnv(t, Options{})
	spy := e.dialClaim(t)
	if err := spy.subscribe(topicCSR+"/accepted", topicRegister+"/accepted", topicCSR+"/rejected", topicRegister+"/rejected"); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.dial(t, e.claimCert(t))
			if err != nil {
				errs <- fmt.Errorf("device %d connect: %w", i, err)
				return
			}
			if i%2 == 0 { // half subscribe first, as SDK clients do; half not, as Greengrass lite
				if err := c.subscribe(topicCSR+"/+", topicRegister+"/+"); err != nil {
					errs <- err
					return
				}
			}
			key := newKey(t)
			res, payload, err := c.callWait(topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, key)}, 20*time.Second)
			if err != nil || res != "accepted" {
				errs <- fmt.Errorf("device %d CSR: %s %s %v", i, res, payload, err)
				return
			}
			var body map[string]string
			if err := json.Unmarshal(payload, &body); err != nil {
				errs <- err
				return
			}
			block, _ := pem.Decode([]byte(body["certificatePem"]))
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil || !cert.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
				errs <- fmt.Errorf("device %d got a certificate for another key", i)
				return
			}
			serial := fmt.Sprintf("00_00_00_00_00_%02x", i)
			res, payload, err = c.callWait(topicRegister, map[string]any{
				"certificateOwnershipToken": body["certificateOwnershipToken"],
				"parameters":                map[string]string{"SerialNumber": serial},
			}, 20*time.Second)
			if err != nil || res != "accepted" || !strings.Contains(string(payload), `"gg_`+serial+`"`) {
				errs <- fmt.Errorf("device %d register: %s %s %v", i, res, payload, err)
				return
			}
			time.Sleep(100 * time.Millisecond) // let any stray answer arrive
			c.mu.Lock()
			seen := len(c.seen)
			c.mu.Unlock()
			if seen != 2 {
				errs <- fmt.Errorf("device %d received %d messages, want its own 2", i, seen)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	spy.mu.Lock()
	defer spy.mu.Unlock()
	if len(spy.seen) != 0 {
		t.Errorf("a client that asked nothing received %d answers: %v", len(spy.seen), spy.seen)
	}
	reg, _ := ReadRegistry(e.dir)
	if len(reg.Things) != n || len(reg.Certificates) != n+1 {
		t.Errorf("registry has %d things and %d certificates, want %d and %d", len(reg.Things), len(reg.Certificates), n, n+1)
	}
}

// clock is a settable time source for token expiry.
type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d)) }

func newClock() *clock {
	c := &clock{}
	c.t.Store(time.Now().UnixNano())
	return c
}

func TestTokenExpiresAfterLifetime(t *testing.T) {
	clk := newClock()
	e := startEnv(t, Options{Now: clk.now})
	c := e.dialClaim(t)
	p := createCert(t, c)
	clk.advance(59 * time.Minute)
	early := createCert(t, c) // still valid at 59 min
	clk.advance(2 * time.Minute)
	res, body := c.call(topicRegister, map[string]any{"certificateOwnershipToken": p.token, "parameters": map[string]any{"SerialNumber": "aa"}})
	want := map[string]any{"statusCode": 400.0, "errorCode": "InvalidCertificateOwnershipToken", "errorMessage": "Certificate ownership token has expired."}
	if res != "rejected" || !reflect.DeepEqual(body, want) {
		t.Errorf("expired token: %s %v, want rejected %v", res, body, want)
	}
	register(t, c, &early, "bb")
	if early.thingName != "gg_bb" {
		t.Errorf("token 2 minutes old refused: thing %q", early.thingName)
	}
	// AWS deletes a certificate never activated once its token expired.
	reg, _ := ReadRegistry(e.dir)
	if _, ok := reg.Certificates[p.certID]; ok {
		t.Errorf("expired pending certificate still in the registry")
	}
}

func TestTokenLifetimeOption(t *testing.T) {
	clk := newClock()
	e := startEnv(t, Options{Now: clk.now, TokenLifetime: time.Minute})
	c := e.dialClaim(t)
	p := createCert(t, c)
	clk.advance(61 * time.Second)
	res, body := c.call(topicRegister, map[string]any{"certificateOwnershipToken": p.token, "parameters": map[string]any{"SerialNumber": "aa"}})
	if res != "rejected" || body["errorMessage"] != "Certificate ownership token has expired." {
		t.Errorf("TokenLifetime 1m, token 61s old: %s %v", res, body)
	}
}

func TestRegisterThingIsIdempotentPerToken(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	p := createCert(t, c)
	register(t, c, &p, "11_22_33_44_55_66")
	// The device lost power before it saw the answer; on the next boot it
	// repeats the call (even with different parameters) and must get the
	// same thing, not a second one.
	again := p
	register(t, c, &again, "ff_ff_ff_ff_ff_ff")
	if again.thingName != p.thingName {
		t.Errorf("repeated RegisterThing gave %q, first gave %q", again.thingName, p.thingName)
	}
	reg, _ := ReadRegistry(e.dir)
	if len(reg.Things) != 1 {
		t.Errorf("%d things after a repeated RegisterThing, want 1", len(reg.Things))
	}
}

func TestRejections(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	p := createCert(t, c)

	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	// A CSR whose signature does not match its content.
	tampered := func() string {
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a"}}, newKey(t))
		der[len(der)-5] ^= 0xff
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}()

	tests := []struct {
		name    string
		topic   string
		payload any
		status  float64
		code    string
		msg     string // exact, or a prefix when it ends in "..."
	}{
		{"csr not JSON", topicCSR, "{", 400, "InvalidPayload", "Invalid request payload: unexpected end of JSON input"},
		{"csr missing", topicCSR, "{}", 400, "InvalidPayload", "Certificate signing request cannot be empty."},
		{"csr wrong type", topicCSR, `{"certificateSigningRequest": 5}`, 400, "InvalidPayload", "Invalid request payload: ..."},
		{"csr not PEM", topicCSR, map[string]any{"certificateSigningRequest": "hello"}, 400, "InvalidPayload", "Invalid certificate signing request: no PEM block found."},
		{"csr rsa 1024", topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, rsaKey)}, 400, "InvalidPayload",
			"Invalid certificate signing request: RSA key of 1024 bits; use RSA >= 2048 or EC P-256/P-384/P-521."},
		{"csr p224", topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, p224)}, 400, "InvalidPayload",
			"Invalid certificate signing request: EC curve P-224; use RSA >= 2048 or EC P-256/P-384/P-521."},
		{"csr bad signature", topicCSR, map[string]any{"certificateSigningRequest": tampered}, 400, "InvalidPayload", "Invalid certificate signing request: ..."},
		{"register not JSON", topicRegister, "nope", 400, "InvalidPayload", "Invalid request payload: ..."},
		{"register parameter not a string", topicRegister, `{"certificateOwnershipToken":"x","parameters":{"SerialNumber":5}}`, 400, "InvalidPayload", "Invalid request payload: ..."},
		{"token empty", topicRegister, map[string]any{"certificateOwnershipToken": ""}, 400, "InvalidCertificateOwnershipToken", "Certificate ownership token cannot be empty."},
		{"token missing", topicRegister, map[string]any{"parameters": map[string]any{"SerialNumber": "a"}}, 400, "InvalidCertificateOwnershipToken", "Certificate ownership token cannot be empty."},
		{"token unknown", topicRegister, map[string]any{"certificateOwnershipToken": "deadbeef"}, 400, "InvalidCertificateOwnershipToken", "Certificate ownership token is invalid."},
		{"template unknown", "$aws/provisioning-templates/NoSuchTemplate/provision/json", map[string]any{"certificateOwnershipToken": p.token}, 404, "ResourceNotFound", "Template NoSuchTemplate not found."},
		{"parameter missing", topicRegister, map[string]any{"certificateOwnershipToken": p.token}, 400, "InvalidParameters",
			"Missing value for parameter(s) SerialNumber required by template GreengrassFleetProvisioningTemplate."},
		{"thing name invalid", topicRegister, map[string]any{"certificateOwnershipToken": p.token, "parameters": map[string]any{"SerialNumber": "a/b"}}, 400, "InvalidParameters",
			`Thing name "gg_a/b" is invalid: use 1-128 characters from a-z A-Z 0-9 : _ -.`},
	}
	csrShape := shapeKeys(t, "docs-payload-CreateCertificateFromCsr.rejected.jsonish")
	registerShape := shapeKeys(t, "docs-payload-RegisterThing.rejected.jsonish")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := c.call(tt.topic, tt.payload)
			if res != "rejected" {
				t.Fatalf("answer on %s: %v", res, body)
			}
			wantKeys := registerShape
			if tt.topic == topicCSR {
				wantKeys = csrShape
			}
			if got := keysOf(body); !reflect.DeepEqual(got, wantKeys) {
				t.Errorf("rejected keys %v, docs say %v", got, wantKeys)
			}
			if body["statusCode"] != tt.status || body["errorCode"] != tt.code {
				t.Errorf("got %v %v, want %v %s", body["statusCode"], body["errorCode"], tt.status, tt.code)
			}
			msg, _ := body["errorMessage"].(string)
			if prefix, ok := strings.CutSuffix(tt.msg, "..."); ok {
				if !strings.HasPrefix(msg, prefix) || len(msg) == len(prefix) {
					t.Errorf("errorMessage %q, want %q followed by a reason", msg, prefix)
				}
			} else if msg != tt.msg {
				t.Errorf("errorMessage %q, want %q", msg, tt.msg)
			}
		})
	}
	// None of the rejected registrations left a thing or activated the
	// certificate: the token still works.
	register(t, c, &p, "a2_b9_d2_5a_fd_f9")
	reg, _ := ReadRegistry(e.dir)
	if len(reg.Things) != 1 {
		t.Errorf("%d things after rejections and one success, want 1", len(reg.Things))
	}
}

func TestUnknownPolicyInTemplateIsNotFound(t *testing.T) {
	dir := initDir(t)
	if err := os.Remove(filepath.Join(dir, "policies", "GreengrassV2IoTThingPolicy-GreengrassFleetProvisioning.json")); err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, Options{Dir: dir})
	c := e.dialClaim(t)
	p := createCert(t, c)
	res, body := c.call(topicRegister, map[string]any{"certificateOwnershipToken": p.token, "parameters": map[string]any{"SerialNumber": "aa"}})
	if res != "rejected" || body["statusCode"] != 404.0 || body["errorMessage"] != "Policy GreengrassV2IoTThingPolicy-GreengrassFleetProvisioning not found." {
		t.Errorf("template naming a missing policy: %s %v", res, body)
	}
	reg, _ := ReadRegistry(e.dir)
	if len(reg.Things) != 0 || reg.Certificates[p.certID].Status != StatusPendingActivation {
		t.Errorf("a rejected RegisterThing changed the registry")
	}
}

func TestOverrideSettingsFailIsConflict(t *testing.T) {
	dir := initDir(t)
	tmpl := `{"Parameters":{"Name":{"Type":"String"},"Color":{"Type":"String"}},
	  "Resources":{
	    "thing":{"Type":"AWS::IoT::Thing","Properties":{"ThingName":{"Ref":"Name"},"AttributePayload":{"color":{"Ref":"Color"}}},
	             "OverrideSettings":{"AttributePayload":"FAIL"}},
	    "certificate":{"Type":"AWS::IoT::Certificate","Properties":{"CertificateId":{"Ref":"AWS::IoT::Certificate::Id"},"Status":"ACTIVE"}}}}`
	if err := os.WriteFile(filepath.Join(dir, "templates", "Strict.json"), []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, Options{Dir: dir})
	c := e.dialClaim(t)
	topic := "$aws/provisioning-templates/Strict/provision/json"
	for i, color := range []string{"red", "red", "blue"} {
		p := createCert(t, c)
		res, body := c.call(topic, map[string]any{"certificateOwnershipToken": p.token, "parameters": map[string]any{"Name": "lamp", "Color": color}})
		if i < 2 && res != "accepted" {
			t.Errorf("registration %d with the same attributes: %s %v", i, res, body)
		}
		if i == 2 && (res != "rejected" || body["statusCode"] != 409.0 || body["errorCode"] != "ResourceConflict") {
			t.Errorf("changed attribute under FAIL: %s %v, want 409 ResourceConflict", res, body)
		}
	}
	reg, _ := ReadRegistry(e.dir)
	if got := reg.Things["lamp"]; got == nil || len(got.Principals) != 2 || got.Attributes["color"] != "red" {
		t.Errorf("thing after conflict: %+v", got)
	}
}

func TestFaults(t *testing.T) {
	t.Run("reject twice then succeed", func(t *testing.T) {
		f, _ := ParseFault("CreateCertificateFromCsr:reject=503/ServiceUnavailable:times=2")
		e := startEnv(t, Options{Faults: []Fault{f}})
		c := e.dialClaim(t)
		key := newKey(t)
		for i := range 2 {
			res, body := c.call(topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, key)})
			msg, _ := body["errorMessage"].(string)
			if res != "rejected" || body["statusCode"] != 503.0 || body["errorCode"] != "ServiceUnavailable" || !strings.HasPrefix(msg, "Injected fault") {
				t.Errorf("attempt %d: %s %v, want the injected 503", i+1, res, body)
			}
		}
		createCert(t, c)
		reg, _ := ReadRegistry(e.dir)
		if len(reg.Certificates) != 2 {
			t.Errorf("%d certificates, want claim + 1: rejected attempts must create none", len(reg.Certificates))
		}
	})
	t.Run("delay holds the answer after the work is done", func(t *testing.T) {
		f, _ := ParseFault("RegisterThing:delay=700ms")
		e := startEnv(t, Options{Faults: []Fault{f}})
		c := e.dialClaim(t)
		p := createCert(t, c)
		if _, err := c.publish(topicRegister, []byte(`{"certificateOwnershipToken":"`+p.token+`","parameters":{"SerialNumber":"aa"}}`)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		time.Sleep(300 * time.Millisecond)
		reg, _ := ReadRegistry(e.dir)
		if reg.Things["gg_aa"] == nil {
			t.Errorf("thing not registered while the answer is held")
		}
		select {
		case m := <-c.msgs:
			if el := time.Since(start) + 0; el < 300*time.Millisecond || !strings.HasSuffix(m.Topic, "/accepted") {
				t.Errorf("answer %s after %v", m.Topic, el)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no answer after the delay")
		}
	})
	t.Run("drop swallows the request once", func(t *testing.T) {
		f, _ := ParseFault("CreateCertificateFromCsr:drop:times=1")
		e := startEnv(t, Options{Faults: []Fault{f}})
		c := e.dialClaim(t)
		_, _, err := c.callWait(topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, newKey(t))}, 500*time.Millisecond)
		if !errors.Is(err, errNoAnswer) {
			t.Errorf("dropped request answered: %v", err)
		}
		reg, _ := ReadRegistry(e.dir)
		if len(reg.Certificates) != 1 {
			t.Errorf("dropped request created a certificate")
		}
		createCert(t, c) // the retry goes through
	})
	t.Run("drop=answer loses only the answer", func(t *testing.T) {
		f, _ := ParseFault("CreateCertificateFromCsr:drop=answer")
		e := startEnv(t, Options{Faults: []Fault{f}})
		c := e.dialClaim(t)
		_, _, err := c.callWait(topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, newKey(t))}, 500*time.Millisecond)
		if !errors.Is(err, errNoAnswer) {
			t.Errorf("answer not dropped: %v", err)
		}
		reg, _ := ReadRegistry(e.dir)
		if len(reg.Certificates) != 2 {
			t.Errorf("%d certificates, want the claim and the one whose answer was lost", len(reg.Certificates))
		}
	})
	t.Run("disconnect closes the requester", func(t *testing.T) {
		f, _ := ParseFault("RegisterThing:disconnect")
		e := startEnv(t, Options{Faults: []Fault{f}})
		c := e.dialClaim(t)
		p := createCert(t, c)
		_, _ = c.publish(topicRegister, []byte(`{"certificateOwnershipToken":"`+p.token+`","parameters":{"SerialNumber":"aa"}}`))
		select {
		case <-c.pc.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("connection still open after a disconnect fault")
		}
	})
}

func TestRegistrySurvivesReopen(t *testing.T) {
	dir := initDir(t)
	e := startEnv(t, Options{Dir: dir})
	c := e.dialClaim(t)
	p := createCert(t, c)
	register(t, c, &p, "01_02_03_04_05_06")
	pending := createCert(t, c)
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}

	e2 := startEnv(t, Options{Dir: dir})
	if _, err := e2.dial(t, p.tlsCert(t)); err != nil {
		t.Errorf("certificate registered before the restart refused: %v", err)
	}
	c2 := e2.dialClaim(t)
	again := p
	register(t, c2, &again, "01_02_03_04_05_06")
	if again.thingName != "gg_01_02_03_04_05_06" {
		t.Errorf("token reuse after restart gave %q", again.thingName)
	}
	// A token issued before the restart still registers after it.
	register(t, c2, &pending, "99")
	if pending.thingName != "gg_99" {
		t.Errorf("token issued before restart gave %q", pending.thingName)
	}
}

func TestServerCertificateNamesLocalhost(t *testing.T) {
	e := startEnv(t, Options{})
	for _, name := range []string{"localhost", "127.0.0.1"} {
		cfg := e.tlsConfig(t, e.claimCert(t))
		cfg.ServerName = name
		conn, err := tls.Dial("tcp", e.srv.Addr(), cfg)
		if err != nil {
			t.Errorf("server certificate not valid for %s: %v", name, err)
			continue
		}
		_ = conn.Close()
	}
}

func TestTopicMatches(t *testing.T) {
	for _, tt := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/+/c", "a/b/c", true},
		{"a/#", "a/b/c", true},
		{"a/b", "a/b/c", false},
		{"#", "$aws/x", false},
		{"$aws/certificates/create-from-csr/json/+", "$aws/certificates/create-from-csr/json/accepted", true},
	} {
		if got := topicMatches(tt.filter, tt.topic); got != tt.want {
			t.Errorf("topicMatches(%q, %q) = %v", tt.filter, tt.topic, got)
		}
	}
}

// One log level governs the emulator and the broker inside it: at info the
// broker's start-up chatter is hidden, at debug it shows.
func TestBrokerLogsFollowTheLevel(t *testing.T) {
	for _, tt := range []struct {
		level     slog.Level
		wantChatt bool
	}{{slog.LevelInfo, false}, {slog.LevelDebug, true}} {
		var buf syncbuf.Buffer
		logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tt.level}))
		e := startEnv(t, Options{Logger: logger})
		_ = e.srv.Close()
		out := buf.String()
		if !strings.Contains(out, "cloud emulator listening") {
			t.Errorf("level %v: emulator's own log missing: %s", tt.level, out)
		}
		if got := strings.Contains(out, "mochi mqtt starting"); got != tt.wantChatt {
			t.Errorf("level %v: broker start-up logged %v, want %v: %s", tt.level, got, tt.wantChatt, out)
		}
	}
}

// The emulator agrees the key exchanges AWS IoT does: a Go client, which
// offers the hybrid X25519 + ML-KEM share first, gets plain X25519; one
// that offers only P-256 gets P-256.
func TestKeyExchangeAsAWSIoT(t *testing.T) {
	e := startEnv(t, Options{})
	for _, tc := range []struct {
		offer []tls.CurveID
		want  tls.CurveID
	}{
		{nil, tls.X25519},
		{[]tls.CurveID{tls.CurveP256}, tls.CurveP256},
	} {
		cfg := e.tlsConfig(t, e.claimCert(t))
		cfg.CurvePreferences = tc.offer
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: waitLimit}, "tcp", e.srv.Addr(), cfg)
		if err != nil {
			t.Fatalf("offering %v: %v", tc.offer, err)
		}
		if got := conn.ConnectionState().CurveID; got != tc.want {
			t.Errorf("offering %v: agreed %v, want %v", tc.offer, got, tc.want)
		}
		_ = conn.Close()
	}
}
