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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/fleetprov/fleetprov/failure"
)

func newWorldWith(t *testing.T, mutate func(*Options)) *world {
	t.Helper()
	p := newPKI(t)
	w := &world{pki: p, aws: startBroker(t, p.serverTLS(t))}
	w.issued = []byte(testDevice.certPEM)
	w.aws.setReply(w.happyPath)
	logger, logs := debugLogger()
	w.logs = logs
	o := p.options(w.aws.addr, logger)
	mutate(&o)
	cl, err := Dial(context.Background(), o)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	w.cl = cl
	return w
}

func testKeyPEM(t *testing.T) string {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// In CBOR mode every request goes to the cbor topic, is CBOR with the same
// keys as JSON, and CBOR answers are decoded.
func TestCBORRoundTrip(t *testing.T) {
	w := newWorldWith(t, func(o *Options) { o.Format = "cbor" })
	w.aws.setReply(func(req request) (string, []byte, bool) {
		var v map[string]any
		if err := cbor.Unmarshal(req.payload, &v); err != nil {
			t.Errorf("request on %s is not CBOR: %v", req.topic, err)
			return "", nil, false
		}
		switch {
		case req.topic == "$aws/certificates/create-from-csr/cbor":
			if v["certificateSigningRequest"] != testCSR {
				t.Errorf("CSR request = %v", v)
			}
			b, _ := cbor.Marshal(map[string]string{"certificateId": testCertID, "certificatePem": string(w.issued), "certificateOwnershipToken": testToken})
			return "accepted", b, true
		case req.topic == "$aws/provisioning-templates/"+testTemplate+"/provision/cbor":
			if v["certificateOwnershipToken"] != testToken {
				t.Errorf("RegisterThing request = %v", v)
			}
			b, _ := cbor.Marshal(map[string]any{"thingName": "gg_1", "deviceConfiguration": map[string]string{"k": "v"}})
			return "accepted", b, true
		}
		t.Errorf("request on unexpected topic %s", req.topic)
		return "", nil, false
	})
	res, err := w.cl.CreateCertificateFromCsr(reqCtx(t, 5*time.Second), testCSR)
	if err != nil {
		t.Fatal(err)
	}
	if res.CertificateID != testCertID || res.OwnershipToken != testToken {
		t.Errorf("result %+v", res)
	}
	reg, err := w.cl.RegisterThing(reqCtx(t, 5*time.Second), testTemplate, testToken, map[string]string{"SerialNumber": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if reg.ThingName != "gg_1" || reg.DeviceConfiguration["k"] != "v" {
		t.Errorf("registration %+v", reg)
	}
}

func TestCBORRejection(t *testing.T) {
	w := newWorldWith(t, func(o *Options) { o.Format = "cbor" })
	w.aws.setReply(func(req request) (string, []byte, bool) {
		b, _ := cbor.Marshal(map[string]any{"statusCode": 400, "errorCode": "InvalidPayload", "errorMessage": "bad"})
		return "rejected", b, true
	})
	_, err := w.cl.CreateCertificateFromCsr(reqCtx(t, 5*time.Second), testCSR)
	var rej *Rejection
	if !errors.As(err, &rej) || rej.StatusCode != 400 || rej.ErrorCode != "InvalidPayload" || failure.IsTransient(err) {
		t.Fatalf("err = %v", err)
	}
}

func TestCreateKeysAndCertificate(t *testing.T) {
	for _, format := range []string{"json", "cbor"} {
		t.Run(format, func(t *testing.T) {
			w := newWorldWith(t, func(o *Options) { o.Format = format })
			key := testDevice.keyPEM
			var mu sync.Mutex
			var got []byte
			w.aws.setReply(func(req request) (string, []byte, bool) {
				if req.topic != "$aws/certificates/create/"+format {
					t.Errorf("request on %s", req.topic)
				}
				mu.Lock()
				got = req.payload
				mu.Unlock()
				ans := map[string]string{"certificateId": testCertID, "certificatePem": string(w.issued), "privateKey": key, "certificateOwnershipToken": testToken}
				if format == "cbor" {
					b, _ := cbor.Marshal(ans)
					return "accepted", b, true
				}
				return "accepted", mustJSON(ans), true
			})
			res, err := w.cl.CreateKeysAndCertificate(reqCtx(t, 5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if res.PrivateKeyPEM != key || res.CertificateID != testCertID || res.OwnershipToken != testToken {
				t.Errorf("result fields wrong")
			}
			mu.Lock()
			defer mu.Unlock()
			// The SDKs send an empty object: {} in JSON, a0 in CBOR.
			want := map[string]string{"json": "{}", "cbor": "\xa0"}[format]
			if string(got) != want {
				t.Errorf("request payload %x, want %x", got, want)
			}
			if strings.Contains(w.logs.String(), "PRIVATE KEY") || strings.Contains(w.logs.String(), testToken) {
				t.Errorf("private key or token in logs")
			}
		})
	}
}

func TestCreateKeysAnswerWithoutKeyIsFatal(t *testing.T) {
	w := newWorld(t)
	w.aws.setReply(func(req request) (string, []byte, bool) {
		return "accepted", mustJSON(map[string]string{"certificateId": testCertID, "certificatePem": string(w.issued), "privateKey": "not pem", "certificateOwnershipToken": testToken}), true
	})
	_, err := w.cl.CreateKeysAndCertificate(reqCtx(t, 5*time.Second))
	if err == nil || failure.IsTransient(err) || !strings.Contains(err.Error(), "privateKey is not a PEM private key") {
		t.Fatalf("err = %v", err)
	}
}

// The client offers ALPN x-amzn-mqtt-ca on port 443 by default (AWS needs
// it there), nothing elsewhere, and exactly what Options.ALPN says.
func TestALPN(t *testing.T) {
	for _, tc := range []struct {
		name, alpn string
		want       []string
	}{
		{"default on a non-443 port", "", nil},
		{"explicit", "x-amzn-mqtt-ca", []string{"x-amzn-mqtt-ca"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPKI(t)
			srvTLS := p.serverTLS(t)
			offered := make(chan []string, 4)
			srvTLS.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
				offered <- h.SupportedProtos
				return nil, nil
			}
			aws := startBroker(t, srvTLS)
			o := p.options(aws.addr, nil)
			o.ALPN = tc.alpn
			cl, err := Dial(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			got := <-offered
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("offered ALPN %v, want %v", got, tc.want)
			}
		})
	}
	p := newPKI(t)
	cfg, err := tlsConfig(p.options("h:443", nil), "h", 443)
	if err != nil || strings.Join(cfg.NextProtos, ",") != alpnMQTT443 {
		t.Errorf("port 443 ALPN = %v, %v; want %s", cfg.NextProtos, err, alpnMQTT443)
	}
	o := p.options("h:443", nil)
	o.ALPN = "none"
	if cfg, _ = tlsConfig(o, "h", 443); len(cfg.NextProtos) != 0 {
		t.Errorf("ALPN none still offers %v", cfg.NextProtos)
	}
}
