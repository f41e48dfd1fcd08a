package cloudsim

import (
	"crypto/tls"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/internal/mosquittotest"
)

// brokerEnv is the emulator attached to a mosquitto the test started, with
// mutual TLS from the emulator CA on both sides.
func startBrokerEnv(t *testing.T, opts Options) (*env, *mosquittotest.Broker) {
	t.Helper()
	dir := initDir(t)
	b := mosquittotest.Start(t, mosquittotest.Config{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "server.pem.crt"),
		KeyFile:  filepath.Join(dir, "server.pem.key"),
	})
	opts.Dir = dir
	opts.Broker = b.URL()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	srv, err := Open(opts)
	if err != nil {
		t.Fatalf("Open in broker mode: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("attach to mosquitto: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &env{dir: dir, srv: srv}, b
}

// dialBroker connects a plain MQTT 5 client to the third-party broker.
func (e *env) dialBroker(t *testing.T, b *mosquittotest.Broker, cert tls.Certificate) *client {
	t.Helper()
	conn, err := tls.Dial("tcp", b.Addr(), e.tlsConfig(t, cert))
	if err != nil {
		t.Fatalf("TLS to mosquitto: %v", err)
	}
	c, err := connectClient(t, conn, randomID())
	if err != nil {
		t.Fatalf("MQTT 5 connect to mosquitto: %v", err)
	}
	return c
}

// Through mosquitto, a device provisions with each certificate flow in
// each format. It must subscribe first: a plain broker delivers only to
// subscribers.
func TestBrokerModeMosquitto(t *testing.T) {
	e, b := startBrokerEnv(t, Options{})
	for _, tc := range []struct {
		flow, format string
	}{{"csr", "json"}, {"csr", "cbor"}, {"keys", "json"}, {"keys", "cbor"}} {
		t.Run(tc.flow+"/"+tc.format, func(t *testing.T) {
			codec := testCodec(t, tc.format)
			c := e.dialBroker(t, b, e.claimCert(t))
			certTopic := "$aws/certificates/create-from-csr/" + tc.format
			request := codec.enc(map[string]any{"certificateSigningRequest": csrPEM(t, newKey(t))})
			if tc.flow == "keys" {
				certTopic = "$aws/certificates/create/" + tc.format
				request = codec.enc(map[string]any{})
			}
			regTopic := "$aws/provisioning-templates/GreengrassFleetProvisioningTemplate/provision/" + tc.format
			if err := c.subscribe(certTopic+"/+", regTopic+"/+"); err != nil {
				t.Fatal(err)
			}
			res, body := c.callFormat(codec, certTopic, request)
			if res != "accepted" {
				t.Fatalf("certificate through mosquitto: %s %v", res, body)
			}
			if _, hasKey := body["privateKey"]; hasKey != (tc.flow == "keys") {
				t.Errorf("privateKey present %v in the %s answer", hasKey, tc.flow)
			}
			serial := "b0_00_00_00_" + tc.flow[:2] + "_" + tc.format[:2]
			res, body = c.callFormat(codec, regTopic, codec.enc(map[string]any{
				"certificateOwnershipToken": body["certificateOwnershipToken"],
				"parameters":                map[string]any{"SerialNumber": serial},
			}))
			if res != "accepted" || body["thingName"] != "gg_"+serial {
				t.Fatalf("RegisterThing through mosquitto: %s %v", res, body)
			}
			reg, _ := ReadRegistry(e.dir)
			th := reg.Things["gg_"+serial]
			if th == nil || len(th.Principals) != 1 || reg.Certificates[th.Principals[0]].Status != StatusActive {
				t.Errorf("registry after provisioning through mosquitto: thing %+v", th)
			}
		})
	}
}

// A plain broker hands an answer to every subscriber of the response
// topic: why broker mode serves one device at a time.
func TestBrokerModeAnswersEverySubscriber(t *testing.T) {
	e, b := startBrokerEnv(t, Options{})
	asker := e.dialBroker(t, b, e.claimCert(t))
	bystander := e.dialBroker(t, b, e.claimCert(t))
	for _, c := range []*client{asker, bystander} {
		if err := c.subscribe(topicCSR + "/+"); err != nil {
			t.Fatal(err)
		}
	}
	createCert(t, asker)
	select {
	case m := <-bystander.msgs:
		if m.Topic != topicCSR+"/accepted" {
			t.Errorf("bystander got %s", m.Topic)
		}
	case <-time.After(5 * time.Second):
		t.Error("a second subscriber did not see the answer: if the broker now routes answers, update the one-device-at-a-time docs")
	}
}

// Injected faults work through the broker, except disconnect, which Open
// refuses: the service cannot close a connection on someone else's broker.
func TestBrokerModeFaults(t *testing.T) {
	rej, _ := ParseFault("CreateCertificateFromCsr:reject=503/ServiceUnavailable:times=1")
	delay, _ := ParseFault("RegisterThing:delay=500ms")
	e, b := startBrokerEnv(t, Options{Faults: []Fault{rej, delay}})
	c := e.dialBroker(t, b, e.claimCert(t))
	if err := c.subscribe(topicCSR+"/+", topicRegister+"/+"); err != nil {
		t.Fatal(err)
	}
	res, body := c.call(topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, newKey(t))})
	if res != "rejected" || body["statusCode"] != 503.0 || body["errorCode"] != "ServiceUnavailable" {
		t.Errorf("injected reject through mosquitto: %s %v", res, body)
	}
	p := createCert(t, c)
	start := time.Now()
	register(t, c, &p, "de_1a_00_00_00_01")
	if el := time.Since(start); el < 500*time.Millisecond {
		t.Errorf("RegisterThing answered after %v, before the injected 500ms delay", el)
	}

	disc, _ := ParseFault("RegisterThing:disconnect")
	_, err := Open(Options{Dir: e.dir, Broker: b.URL(), Faults: []Fault{disc}})
	if !errors.Is(err, ErrBrokerMode) || !strings.Contains(err.Error(), "cannot close a device's connection on another broker") {
		t.Errorf("disconnect fault in broker mode: %v, want ErrBrokerMode", err)
	}
}

func TestBrokerModeOptions(t *testing.T) {
	dir := initDir(t)
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Broker: "tcp://127.0.0.1:1883"}, `broker "tcp://127.0.0.1:1883": want mqtt://HOST:PORT or mqtts://HOST:PORT: not possible in broker mode`},
		{Options{Broker: "mqtt://127.0.0.1"}, `broker "mqtt://127.0.0.1": want mqtt://HOST:PORT or mqtts://HOST:PORT: not possible in broker mode`},
		{Options{Broker: "mqtt://127.0.0.1:1883", Listen: "127.0.0.1:8883"}, "listen address 127.0.0.1:8883 and broker mqtt://127.0.0.1:1883: the emulator either listens or attaches to a broker, not both: not possible in broker mode"},
	} {
		tc.opts.Dir = dir
		if _, err := Open(tc.opts); err == nil || err.Error() != tc.want {
			t.Errorf("Open(%+v): %v\nwant %s", tc.opts, err, tc.want)
		}
	}
	// Nothing listening: Start fails naming the broker, within its timeout.
	defer func(d time.Duration) { attachTimeout = d }(attachTimeout)
	attachTimeout = 1500 * time.Millisecond
	addr, _ := FreePort()
	srv, err := Open(Options{Dir: dir, Broker: "mqtt://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.Start(); err == nil || !strings.Contains(err.Error(), "attach to broker mqtt://"+addr+": ") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Start with no broker listening: %v", err)
	}
}
