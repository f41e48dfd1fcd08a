package iotclient

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/fleetprov/fleetprov/internal/syncbuf"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetprov/fleetprov/failure"
)

const (
	testToken    = "eyJ2ZXJzaW9uIjoiMjAxOS0xMC0xMCIsIm93bmVyc2hpcFRva2VuIjoiU0VDUkVUVE9LRU4ifQ"
	testTemplate = "GreengrassFleetProvisioningTemplate"
)

// The device's key, its CSR, the certificate the fake AWS side issues for
// it and that certificate's id: the client checks each answer against them.
var testDevice = newDeviceFixture()

var (
	testCSR    = testDevice.csrPEM
	testCertID = testDevice.certID
)

// world is a broker with a fake AWS side and a connected device client.
type world struct {
	pki  *pki
	aws  *fakeAWS
	cl   *Client
	logs *syncbuf.Buffer
	// issued is the certificate the fake AWS side hands out.
	issued []byte
}

func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldWith(t, func(*Options) {})
}

func (w *world) happyPath(req request) (string, []byte, bool) {
	if strings.HasPrefix(req.topic, "$aws/certificates/create-from-csr/") {
		return "accepted", mustJSON(map[string]string{
			"certificateId":             testCertID,
			"certificatePem":            string(w.issued),
			"certificateOwnershipToken": testToken,
		}), true
	}
	return "accepted", mustJSON(map[string]any{
		"thingName":           "gg_a2_b9_d2_5a_fd_f9",
		"deviceConfiguration": map[string]string{"FallbackUrl": "https://www.example.com/test-site"},
	}), true
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func reqCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestCreateCertificateFromCsrAccepted(t *testing.T) {
	w := newWorld(t)
	res, err := w.cl.CreateCertificateFromCsr(reqCtx(t, 5*time.Second), testCSR)
	if err != nil {
		t.Fatalf("CreateCertificateFromCsr: %v", err)
	}
	want := &CertificateResult{CertificateID: testCertID, CertificatePEM: string(w.issued), OwnershipToken: testToken}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("result = %+v, want %+v", res, want)
	}

	reqs := w.aws.received()
	if len(reqs) != 1 || reqs[0].topic != "$aws/certificates/create-from-csr/json" {
		t.Fatalf("requests on the wire = %+v, want one on $aws/certificates/create-from-csr/json", reqs)
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(reqs[0].payload, &body); err != nil {
		t.Fatalf("request payload is not a JSON object: %v: %s", err, reqs[0].payload)
	}
	docKeys := jsonishKeys(t, "docs-payload-CreateCertificateFromCsr.request.jsonish")
	sort.Strings(docKeys)
	if got := sortedKeys(body); !slices.Equal(got, docKeys) || !slices.Equal(got, []string{"certificateSigningRequest"}) {
		t.Errorf("request keys = %v, want the docs' %v", got, docKeys)
	}
	var csr string
	if err := json.Unmarshal(body["certificateSigningRequest"], &csr); err != nil || csr != testCSR {
		t.Errorf("certificateSigningRequest = %q (%v), want the CSR PEM unchanged", csr, err)
	}
}

func TestAcceptedPayloadFieldsMatchDocs(t *testing.T) {
	// Our decoding structs must use exactly the docs' field names.
	check := func(file string, v any) {
		t.Helper()
		var got []string
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			got = append(got, strings.Split(typ.Field(i).Tag.Get("json"), ",")[0])
		}
		want := jsonishKeys(t, file)
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("%T fields %v, docs %s have %v", v, got, file, want)
		}
	}
	check("docs-payload-CreateCertificateFromCsr.request.jsonish", createCertificateFromCsrRequest{})
	check("docs-payload-CreateCertificateFromCsr.accepted.jsonish", createCertificateFromCsrAccepted{})
	check("docs-payload-RegisterThing.request.jsonish", registerThingRequest{})
	check("docs-payload-RegisterThing.accepted.jsonish", registerThingAccepted{})
	check("docs-payload-RegisterThing.rejected.jsonish", rejectedPayload{})
}

func TestSubscribesToAcceptedAndRejectedBeforePublishing(t *testing.T) {
	w := newWorld(t)
	ctx := reqCtx(t, 5*time.Second)
	if _, err := w.cl.CreateCertificateFromCsr(ctx, testCSR); err != nil {
		t.Fatal(err)
	}
	if _, err := w.cl.RegisterThing(ctx, testTemplate, testToken, map[string]string{"SerialNumber": "a2_b9_d2_5a_fd_f9"}); err != nil {
		t.Fatal(err)
	}
	events := w.aws.rec.snapshot()
	for _, topic := range []string{
		"$aws/certificates/create-from-csr/json",
		"$aws/provisioning-templates/" + testTemplate + "/provision/json",
	} {
		pub := slices.Index(events, "publish "+topic+" qos1")
		acc := slices.Index(events, "subscribe "+topic+"/accepted qos1")
		rej := slices.Index(events, "subscribe "+topic+"/rejected qos1")
		if pub < 0 || acc < 0 || rej < 0 || acc > pub || rej > pub {
			t.Errorf("for %s want QoS 1 subscriptions to accepted and rejected before a QoS 1 publish; broker saw:\n%s", topic, strings.Join(events, "\n"))
		}
	}
}

func TestRegisterThingAccepted(t *testing.T) {
	w := newWorld(t)
	params := map[string]string{"SerialNumber": "a2_b9_d2_5a_fd_f9", "DeviceLocation": "Seattle"}
	res, err := w.cl.RegisterThing(reqCtx(t, 5*time.Second), testTemplate, testToken, params)
	if err != nil {
		t.Fatalf("RegisterThing: %v", err)
	}
	want := &RegistrationResult{ThingName: "gg_a2_b9_d2_5a_fd_f9", DeviceConfiguration: map[string]string{"FallbackUrl": "https://www.example.com/test-site"}}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("result = %+v, want %+v", res, want)
	}

	reqs := w.aws.received()
	wantTopic := "$aws/provisioning-templates/GreengrassFleetProvisioningTemplate/provision/json"
	if len(reqs) != 1 || reqs[0].topic != wantTopic {
		t.Fatalf("requests on the wire = %+v, want one on %s", reqs, wantTopic)
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(reqs[0].payload, &body); err != nil {
		t.Fatalf("request payload is not a JSON object: %v", err)
	}
	docKeys := jsonishKeys(t, "docs-payload-RegisterThing.request.jsonish")
	sort.Strings(docKeys)
	if got := sortedKeys(body); !slices.Equal(got, docKeys) {
		t.Errorf("request keys = %v, want the docs' %v", got, docKeys)
	}
	var token string
	var gotParams map[string]string
	if err := json.Unmarshal(body["certificateOwnershipToken"], &token); err != nil || token != testToken {
		t.Errorf("certificateOwnershipToken = %q (%v)", token, err)
	}
	if err := json.Unmarshal(body["parameters"], &gotParams); err != nil || !reflect.DeepEqual(gotParams, params) {
		t.Errorf("parameters = %v (%v), want %v", gotParams, err, params)
	}
}

func TestRegisterThingWithoutParametersOmitsThem(t *testing.T) {
	w := newWorld(t)
	if _, err := w.cl.RegisterThing(reqCtx(t, 5*time.Second), testTemplate, testToken, nil); err != nil {
		t.Fatal(err)
	}
	reqs := w.aws.received()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests", len(reqs))
	}
	if want := `{"certificateOwnershipToken":"` + testToken + `"}`; string(reqs[0].payload) != want {
		t.Errorf("payload = %s, want %s", reqs[0].payload, want)
	}
}

func TestRejections(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		name      string
		op        string
		payload   string
		want      Rejection
		wantMsg   string
		transient bool
	}{
		{
			name:    "400 empty token is fatal",
			op:      opRegisterThing,
			payload: `{"statusCode":400,"errorCode":"InvalidCertificateOwnershipToken","errorMessage":"Certificate ownership token cannot be empty."}`,
			want:    Rejection{Operation: opRegisterThing, StatusCode: 400, ErrorCode: "InvalidCertificateOwnershipToken", ErrorMessage: "Certificate ownership token cannot be empty."},
			wantMsg: `RegisterThing rejected: statusCode=400 errorCode="InvalidCertificateOwnershipToken" errorMessage="Certificate ownership token cannot be empty."`,
		},
		{
			name:    "403 is fatal",
			op:      opRegisterThing,
			payload: `{"statusCode":403,"errorCode":"AccessDenied","errorMessage":"Pre-provisioning hook denied."}`,
			want:    Rejection{Operation: opRegisterThing, StatusCode: 403, ErrorCode: "AccessDenied", ErrorMessage: "Pre-provisioning hook denied."},
			wantMsg: `RegisterThing rejected: statusCode=403 errorCode="AccessDenied" errorMessage="Pre-provisioning hook denied."`,
		},
		{
			name:      "503 is transient",
			op:        opCreateCertificateFromCsr,
			payload:   `{"statusCode":503,"errorCode":"ServiceUnavailable","errorMessage":"Service unavailable."}`,
			want:      Rejection{Operation: opCreateCertificateFromCsr, StatusCode: 503, ErrorCode: "ServiceUnavailable", ErrorMessage: "Service unavailable."},
			wantMsg:   `CreateCertificateFromCsr rejected: statusCode=503 errorCode="ServiceUnavailable" errorMessage="Service unavailable."`,
			transient: true,
		},
		{
			name:      "429 is transient",
			op:        opCreateCertificateFromCsr,
			payload:   `{"statusCode":429,"errorCode":"TooManyRequests","errorMessage":"Rate exceeded."}`,
			want:      Rejection{Operation: opCreateCertificateFromCsr, StatusCode: 429, ErrorCode: "TooManyRequests", ErrorMessage: "Rate exceeded."},
			wantMsg:   `CreateCertificateFromCsr rejected: statusCode=429 errorCode="TooManyRequests" errorMessage="Rate exceeded."`,
			transient: true,
		},
		{
			name:      "Throttling error code is transient whatever the status",
			op:        opRegisterThing,
			payload:   `{"statusCode":400,"errorCode":"Throttling","errorMessage":"Rate exceeded."}`,
			want:      Rejection{Operation: opRegisterThing, StatusCode: 400, ErrorCode: "Throttling", ErrorMessage: "Rate exceeded."},
			wantMsg:   `RegisterThing rejected: statusCode=400 errorCode="Throttling" errorMessage="Rate exceeded."`,
			transient: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.aws.setReply(func(request) (string, []byte, bool) { return "rejected", []byte(tt.payload), true })
			var err error
			if tt.op == opRegisterThing {
				_, err = w.cl.RegisterThing(reqCtx(t, 5*time.Second), testTemplate, testToken, nil)
			} else {
				_, err = w.cl.CreateCertificateFromCsr(reqCtx(t, 5*time.Second), testCSR)
			}
			var rej *Rejection
			if !errors.As(err, &rej) {
				t.Fatalf("error %v (%T) is not a *Rejection", err, err)
			}
			if *rej != tt.want {
				t.Errorf("rejection = %+v, want %+v", *rej, tt.want)
			}
			if err.Error() != tt.wantMsg {
				t.Errorf("message:\n got %s\nwant %s", err.Error(), tt.wantMsg)
			}
			if got := failure.IsTransient(err); got != tt.transient {
				t.Errorf("IsTransient = %v, want %v", got, tt.transient)
			}
		})
	}
}

func TestMalformedAnswersAreFatal(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		name    string
		op      string
		suffix  string
		payload string
		wantMsg string
	}{
		{"csr accepted without token", opCreateCertificateFromCsr, "accepted",
			`{"certificateId":"` + testCertID + `","certificatePem":"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"}`,
			"iotclient: CreateCertificateFromCsr: malformed answer on $aws/certificates/create-from-csr/json/accepted: empty or missing [certificateOwnershipToken]"},
		{"csr accepted with garbage pem", opCreateCertificateFromCsr, "accepted",
			`{"certificateId":"x","certificatePem":"not pem","certificateOwnershipToken":"t"}`,
			"iotclient: CreateCertificateFromCsr: refused answer on $aws/certificates/create-from-csr/json/accepted: certificatePem is not a PEM certificate"},
		{"csr accepted not json", opCreateCertificateFromCsr, "accepted", `nope`,
			"iotclient: CreateCertificateFromCsr: malformed answer on $aws/certificates/create-from-csr/json/accepted: invalid character 'o' in literal null (expecting 'u')"},
		{"register accepted without thingName", opRegisterThing, "accepted", `{"deviceConfiguration":{}}`,
			"iotclient: RegisterThing: malformed answer on $aws/provisioning-templates/GreengrassFleetProvisioningTemplate/provision/json/accepted: empty or missing thingName"},
		{"rejected without statusCode", opRegisterThing, "rejected", `{"errorCode":"X"}`,
			"iotclient: RegisterThing: malformed answer on $aws/provisioning-templates/GreengrassFleetProvisioningTemplate/provision/json/rejected: no statusCode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.aws.setReply(func(request) (string, []byte, bool) { return tt.suffix, []byte(tt.payload), true })
			var err error
			if tt.op == opRegisterThing {
				_, err = w.cl.RegisterThing(reqCtx(t, 5*time.Second), testTemplate, testToken, nil)
			} else {
				_, err = w.cl.CreateCertificateFromCsr(reqCtx(t, 5*time.Second), testCSR)
			}
			if err == nil || err.Error() != tt.wantMsg {
				t.Fatalf("error:\n got %v\nwant %s", err, tt.wantMsg)
			}
			if failure.IsTransient(err) {
				t.Errorf("a malformed answer must be fatal, got transient")
			}
		})
	}
}

func TestNoAnswerTimesOutTransient(t *testing.T) {
	w := newWorld(t)
	w.aws.setReply(func(request) (string, []byte, bool) { return "", nil, false })
	start := time.Now()
	_, err := w.cl.RegisterThing(reqCtx(t, 300*time.Millisecond), testTemplate, testToken, nil)
	if err == nil {
		t.Fatal("want a timeout, got an answer")
	}
	if !failure.IsTransient(err) {
		t.Errorf("timeout must be transient: %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error should wrap context.DeadlineExceeded: %v", err)
	}
	for _, s := range []string{"RegisterThing", "$aws/provisioning-templates/GreengrassFleetProvisioningTemplate/provision/json/accepted", w.aws.addr} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	// Bounded loosely: a loaded machine is slow, but only ignoring the
	// deadline takes this long.
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %s, want about the 300ms deadline", d)
	}

	// An answer arriving after the timeout is dropped, and the next request
	// works. (Had it come while the next request waited, it would have been
	// taken as that one's answer: AWS gives no correlation token.)
	if err := w.aws.srv.Publish("$aws/provisioning-templates/"+testTemplate+"/provision/json/accepted", []byte(`{"thingName":"late"}`), false, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(w.logs.String(), "ignoring message nobody waits for") },
		func() string { return "late answer not seen:\n" + w.logs.String() })
	w.aws.setReply(w.happyPath)
	res, err := w.cl.RegisterThing(reqCtx(t, 5*time.Second), testTemplate, testToken, nil)
	if err != nil || res.ThingName != "gg_a2_b9_d2_5a_fd_f9" {
		t.Fatalf("after a late answer: %+v, %v", res, err)
	}
}

func TestConcurrentRequestsOfOneKindAreSerialised(t *testing.T) {
	w := newWorld(t)
	var mu sync.Mutex
	n := 0
	w.aws.setReply(func(req request) (string, []byte, bool) {
		mu.Lock()
		n++
		mu.Unlock()
		// A certificate of its own for each answer, so that a mix-up shows.
		certPEM, id := testDevice.issue(&testDevice.key.PublicKey, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		return "accepted", mustJSON(map[string]string{"certificateId": id, "certificatePem": certPEM, "certificateOwnershipToken": "tok" + id}), true
	})
	const parallel = 4
	ids := make(chan string, parallel)
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := w.cl.CreateCertificateFromCsr(reqCtx(t, 5*time.Second), testCSR)
			if err != nil {
				t.Error(err)
				return
			}
			if res.OwnershipToken != "tok"+res.CertificateID {
				t.Errorf("mismatched answer: %+v", res)
			}
			ids <- res.CertificateID
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		if seen[id] {
			t.Errorf("certificate %s handed to two callers", id)
		}
		seen[id] = true
	}
	if len(seen) != parallel {
		t.Errorf("%d distinct answers, want %d", len(seen), parallel)
	}
}

func TestUnsolicitedAnswerIsIgnored(t *testing.T) {
	w := newWorld(t)
	if _, err := w.cl.CreateCertificateFromCsr(reqCtx(t, 5*time.Second), testCSR); err != nil {
		t.Fatal(err)
	}
	// Nothing waits now; the client stays subscribed.
	if err := w.aws.srv.Publish("$aws/certificates/create-from-csr/json/accepted", []byte(`{"bogus":true}`), false, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(w.logs.String(), "ignoring message nobody waits for") },
		func() string { return "unsolicited answer not noticed; logs:\n" + w.logs.String() })
	if _, err := w.cl.CreateCertificateFromCsr(reqCtx(t, 5*time.Second), testCSR); err != nil {
		t.Fatalf("request after an unsolicited answer: %v", err)
	}
}

func TestResubscribesAfterReconnect(t *testing.T) {
	w := newWorld(t)
	if _, err := w.cl.CreateCertificateFromCsr(reqCtx(t, 5*time.Second), testCSR); err != nil {
		t.Fatal(err)
	}
	before := len(w.aws.rec.snapshot())
	for _, c := range w.aws.srv.Clients.GetAll() {
		if !c.Net.Inline {
			_ = w.aws.srv.DisconnectClient(c, packets.ErrServerShuttingDown)
		}
	}
	want := "subscribe $aws/certificates/create-from-csr/json/accepted qos1"
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev := w.aws.rec.snapshot()[before:]
		if i := slices.Index(ev, "connect"); i >= 0 && slices.Contains(ev[i:], want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no resubscription after reconnect; broker saw:\n%s", strings.Join(ev, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCloseSendsDisconnect(t *testing.T) {
	w := newWorld(t)
	if err := w.cl.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitFor(t, func() bool { return slices.Contains(w.aws.rec.snapshot(), "disconnect") },
		func() string { return fmt.Sprintf("broker saw no DISCONNECT: %v", w.aws.rec.snapshot()) })
	if err := w.cl.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_, err := w.cl.CreateCertificateFromCsr(reqCtx(t, time.Second), testCSR)
	if err == nil || !strings.Contains(err.Error(), "client is closed") {
		t.Errorf("request after Close: %v", err)
	}
}

func TestServerCertNotFromRootCAIsFatal(t *testing.T) {
	p := newPKI(t)
	// The broker presents a certificate from a CA the device does not trust.
	rogue := newCA(t, "rogue CA")
	p.serverCert, p.serverKey = rogue.issue(t, "localhost", "localhost", "127.0.0.1")
	srvTLS := p.serverTLS(t)
	var handshakes atomic.Int32
	srvTLS.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		handshakes.Add(1)
		return nil, nil
	}
	aws := startBroker(t, srvTLS)

	o := p.options(aws.addr, nil)
	o.ConnectTimeout = 10 * time.Second
	cl, err := Dial(context.Background(), o)
	if err == nil {
		_ = cl.Close()
		t.Fatal("Dial trusted a server certificate not signed by the root CA")
	}
	if failure.IsTransient(err) {
		t.Errorf("TLS verification failure must be fatal: %v", err)
	}
	for _, s := range []string{aws.addr, "certificate signed by unknown authority", "does not verify against the root CA " + p.rootCAPath} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	// Counted, not timed: a loaded machine makes one handshake slow, but
	// only a retry makes a second one.
	if n := handshakes.Load(); n != 1 {
		t.Errorf("the client tried %d TLS handshakes; an untrusted server must stop it after the first", n)
	}
}

func TestServerRefusesClaimCertIsFatal(t *testing.T) {
	p := newPKI(t)
	srvTLS := p.serverTLS(t)
	// Every TLS handshake the broker sees: one means no retry.
	var handshakes atomic.Int32
	srvTLS.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		handshakes.Add(1)
		return nil, nil
	}
	aws := startBroker(t, srvTLS)
	// A claim certificate from a CA the broker does not trust.
	rogue := newCA(t, "rogue claim CA")
	cert, key := rogue.issue(t, "claim")
	p.claimCertPath = p.write(t, "rogue.crt", cert)
	p.claimKeyPath = p.write(t, "rogue.key", key)

	o := p.options(aws.addr, nil)
	// Under TLS 1.3 the server refuses a client certificate after the
	// client's side of the handshake is done, so the refusal can first
	// show as a reset connection, which is retried until an attempt reads
	// the alert itself. The timeout leaves room for that on a busy machine.
	o.ConnectTimeout = 60 * time.Second
	cl, err := Dial(context.Background(), o)
	if err == nil {
		_ = cl.Close()
		t.Fatal("Dial succeeded with a claim certificate the broker does not trust")
	}
	if failure.IsTransient(err) {
		t.Errorf("a refused client certificate must be fatal: %v", err)
	}
	for _, s := range []string{aws.addr, "remote error: tls:", "the server refused the claim certificate " + p.claimCertPath} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	// Counted, not timed: a few tries can read a reset before one reads
	// the refusal, but a client that took the refusal for a network fault
	// would go on for the whole minute.
	if n := handshakes.Load(); n > 10 {
		t.Errorf("the client tried %d TLS handshakes before giving up on a refused certificate", n)
	}
	t.Logf("%d TLS handshakes before the refusal was read", handshakes.Load())
}

func TestBrokerDownIsTransient(t *testing.T) {
	p := newPKI(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()

	o := p.options(addr, nil)
	o.ConnectTimeout = 2 * time.Minute
	start := time.Now()
	cl, err := Dial(context.Background(), o)
	if err == nil {
		_ = cl.Close()
		t.Fatal("Dial succeeded with no broker")
	}
	if !failure.IsTransient(err) {
		t.Errorf("no broker must be transient: %v", err)
	}
	for _, s := range []string{addr, "connection refused"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	// A refused dial is known at once: Dial returns it rather than wait
	// out the two minutes (the engine retries with its own backoff). The
	// bound is loose, for a loaded machine.
	if d := time.Since(start); d > time.Minute {
		t.Errorf("Dial took %s over a refused connection, want it at once", d)
	}
}

// A connect that times out (a server that accepts TCP and never answers)
// still waits out ConnectTimeout and says so.
func TestSilentServerTimesOut(t *testing.T) {
	p := newPKI(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	o := p.options(l.Addr().String(), nil)
	o.ConnectTimeout = 700 * time.Millisecond
	cl, err := Dial(context.Background(), o)
	if err == nil {
		_ = cl.Close()
		t.Fatal("Dial succeeded against a silent server")
	}
	if !failure.IsTransient(err) || !strings.Contains(err.Error(), "within 700ms") {
		t.Errorf("err = %v, want a transient error naming the 700ms", err)
	}
}

func TestDialBadInputIsFatal(t *testing.T) {
	p := newPKI(t)
	missing := p.dir + "/missing.key"
	tests := []struct {
		name    string
		mod     func(*Options)
		wantMsg string
	}{
		{"no endpoint", func(o *Options) { o.Endpoint = "" }, "iotclient: no endpoint given"},
		{"bad port", func(o *Options) { o.Endpoint = "example.com:http" }, `iotclient: endpoint "example.com:http": port "http" is not a number from 1 to 65535`},
		{"missing key", func(o *Options) { o.ClaimKeyPath = missing },
			"iotclient: load claim certificate " + p.claimCertPath + " and key " + missing + ": open " + missing + ": no such file or directory"},
		{"key is not a key", func(o *Options) { o.ClaimKeyPath = p.rootCAPath },
			"iotclient: load claim certificate " + p.claimCertPath + " and key " + p.rootCAPath + ": tls: found a certificate rather than a key in the PEM for the private key"},
		{"root CA not PEM", func(o *Options) { o.RootCAPath = p.write(t, "empty.pem", []byte("x")) },
			"iotclient: root CA " + p.dir + "/empty.pem holds no PEM certificate"},
		{"unknown format", func(o *Options) { o.Format = "xml" }, `iotclient: payload format "xml" is not supported (supported: json, cbor)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := p.options("127.0.0.1:1", nil)
			tt.mod(&o)
			_, err := Dial(context.Background(), o)
			if err == nil || err.Error() != tt.wantMsg {
				t.Fatalf("error:\n got %v\nwant %s", err, tt.wantMsg)
			}
			if failure.IsTransient(err) {
				t.Errorf("bad input must be fatal")
			}
		})
	}
}

func TestSplitEndpoint(t *testing.T) {
	tests := []struct {
		endpoint string
		port     int
		host     string
		wantPort int
	}{
		{"abc-ats.iot.us-east-1.amazonaws.com", 0, "abc-ats.iot.us-east-1.amazonaws.com", 8883},
		{"abc-ats.iot.us-east-1.amazonaws.com", 443, "abc-ats.iot.us-east-1.amazonaws.com", 443},
		{"localhost:1883", 443, "localhost", 1883},
		{"[::1]:8883", 0, "::1", 8883},
		{"[::1]", 0, "::1", 8883},
	}
	for _, tt := range tests {
		host, port, err := splitEndpoint(tt.endpoint, tt.port)
		if err != nil || host != tt.host || port != tt.wantPort {
			t.Errorf("splitEndpoint(%q, %d) = %q, %d, %v; want %q, %d", tt.endpoint, tt.port, host, port, err, tt.host, tt.wantPort)
		}
	}
}

func TestRequestInputChecks(t *testing.T) {
	w := newWorld(t)
	ctx := reqCtx(t, time.Second)
	if _, err := w.cl.RegisterThing(ctx, "bad/template+", testToken, nil); err == nil ||
		err.Error() != `iotclient: RegisterThing: template name "bad/template+" must be 1-36 characters of 0-9 A-Z a-z _ -` {
		t.Errorf("bad template name: %v", err)
	}
	if _, err := w.cl.RegisterThing(ctx, testTemplate, "", nil); err == nil ||
		err.Error() != "iotclient: RegisterThing: empty certificate ownership token" {
		t.Errorf("empty token: %v", err)
	}
	if len(w.aws.received()) != 0 {
		t.Errorf("bad input reached the wire: %v", w.aws.received())
	}
}

func TestPahoLogAdapter(t *testing.T) {
	logger, buf := debugLogger()
	slogAdapter{l: logger, level: slog.LevelDebug, component: "paho"}.Println("sending", "CONNECT")
	slogAdapter{l: logger, level: slog.LevelWarn, component: "autopaho"}.Printf("failed to connect to %s: %s\n", "tls://x", "boom")
	out := buf.String()
	for _, s := range []string{
		`level=DEBUG msg="sending CONNECT" component=paho`,
		`level=WARN msg="failed to connect to tls://x: boom" component=autopaho`,
	} {
		if !strings.Contains(out, s) {
			t.Errorf("log output lacks %q:\n%s", s, out)
		}
	}

	// One level governs everything: at info, paho's debug lines vanish.
	infoBuf := &syncbuf.Buffer{}
	info := slog.New(slog.NewTextHandler(infoBuf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slogAdapter{l: info, level: slog.LevelDebug, component: "paho"}.Println("chatty")
	slogAdapter{l: info, level: slog.LevelError, component: "paho"}.Println("bad")
	if strings.Contains(infoBuf.String(), "chatty") || !strings.Contains(infoBuf.String(), "bad") {
		t.Errorf("level filtering wrong:\n%s", infoBuf.String())
	}
}

func TestPahoLogsReachSlog(t *testing.T) {
	w := newWorld(t)
	if _, err := w.cl.CreateCertificateFromCsr(reqCtx(t, 5*time.Second), testCSR); err != nil {
		t.Fatal(err)
	}
	// autopaho and paho log from goroutines of their own: a line may land
	// a moment after the request returns.
	want := []string{"component=paho", `msg="sending CONNECT"`, "component=autopaho"}
	waitFor(t, func() bool {
		logs := w.logs.String()
		for _, s := range want {
			if !strings.Contains(logs, s) {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("logs lack one of %q:\n%s", want, w.logs.String()) })
}

func TestNoSecretsInLogs(t *testing.T) {
	w := newWorld(t)
	ctx := reqCtx(t, 5*time.Second)
	res, err := w.cl.CreateCertificateFromCsr(ctx, testCSR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.cl.RegisterThing(ctx, testTemplate, res.OwnershipToken, map[string]string{"SerialNumber": "a2"}); err != nil {
		t.Fatal(err)
	}
	// Fail a request too: error paths log as well.
	w.aws.setReply(func(request) (string, []byte, bool) { return "", nil, false })
	_, _ = w.cl.RegisterThing(reqCtx(t, 200*time.Millisecond), testTemplate, res.OwnershipToken, nil)
	_ = w.cl.Close()

	logs := w.logs.String()
	if !strings.Contains(logs, testCertID) {
		t.Fatalf("logs should name the certificate id (and so prove capture works):\n%s", logs)
	}
	secrets := map[string]string{
		"ownership token":  testToken,
		"certificate PEM":  pemBody(string(w.issued)),
		"claim key PEM":    pemBody(string(w.pki.claimKey)),
		"PEM armour":       "-----BEGIN",
		"escaped PEM body": strings.ReplaceAll(pemBody(string(w.issued)), "\n", `\n`),
	}
	for name, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain the %s", name)
		}
	}
}

// pemBody returns the first base64 line of a PEM block: distinctive enough.
func pemBody(p string) string {
	lines := strings.Split(p, "\n")
	return lines[1]
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
