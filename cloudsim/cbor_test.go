package cloudsim

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// wireCodec is the test side's own encoding of one format: plain maps,
// nothing shared with the emulator's payload types.
type wireCodec struct {
	enc func(v any) []byte
	dec func(b []byte) map[string]any
}

func testCodec(t *testing.T, format string) wireCodec {
	switch format {
	case "json":
		return wireCodec{
			enc: func(v any) []byte { return jsonBody(t, v) },
			dec: func(b []byte) map[string]any {
				var m map[string]any
				if err := json.Unmarshal(b, &m); err != nil {
					t.Fatalf("answer is not a JSON object: %v: %q", err, b)
				}
				return m
			},
		}
	case "cbor":
		return wireCodec{
			enc: func(v any) []byte {
				b, err := cbor.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
			dec: func(b []byte) map[string]any {
				// An answer in CBOR is a CBOR map; JSON text would decode
				// as a number or fail here.
				if len(b) == 0 || b[0]>>5 != 5 {
					t.Fatalf("answer is not a CBOR map: %q", b)
				}
				var m map[string]any
				if err := testCBORDec.Unmarshal(b, &m); err != nil {
					t.Fatalf("answer is not CBOR: %v: %q", err, b)
				}
				// CBOR integers decode as uint64; make them compare like
				// the JSON side's numbers.
				for k, v := range m {
					if n, ok := v.(uint64); ok {
						m[k] = float64(n)
					}
				}
				return m
			},
		}
	}
	t.Fatalf("no codec %q", format)
	return wireCodec{}
}

// testCBORDec decodes nested maps as map[string]any, as encoding/json does.
var testCBORDec, _ = cbor.DecOptions{DefaultMapType: reflect.TypeOf(map[string]any(nil))}.DecMode()

// callFormat publishes an encoded request and decodes the answer.
func (c *client) callFormat(codec wireCodec, topic string, payload []byte) (string, map[string]any) {
	c.t.Helper()
	res, b, err := c.callWait(topic, payload, 10*time.Second)
	if err != nil {
		c.t.Fatal(err)
	}
	return res, codec.dec(b)
}

const (
	topicCSRCBOR      = "$aws/certificates/create-from-csr/cbor"
	topicRegisterCBOR = "$aws/provisioning-templates/GreengrassFleetProvisioningTemplate/provision/cbor"
	topicCreateJSON   = "$aws/certificates/create/json"
	topicCreateCBOR   = "$aws/certificates/create/cbor"
)

// A device that speaks only CBOR (as the FreeRTOS library does)
// provisions end to end and is answered in CBOR, with the keys the docs
// give for JSON.
func TestCBORProvisionEndToEnd(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	cb := testCodec(t, "cbor")
	res, body := c.callFormat(cb, topicCSRCBOR, cb.enc(map[string]any{"certificateSigningRequest": csrPEM(t, newKey(t))}))
	if res != "accepted" {
		t.Fatalf("CreateCertificateFromCsr in CBOR: %s %v", res, body)
	}
	if got, want := keysOf(body), shapeKeys(t, "docs-payload-CreateCertificateFromCsr.accepted.jsonish"); !reflect.DeepEqual(got, want) {
		t.Errorf("CBOR accepted keys %v, docs say %v", got, want)
	}
	res, body = c.callFormat(cb, topicRegisterCBOR, cb.enc(map[string]any{
		"certificateOwnershipToken": body["certificateOwnershipToken"],
		"parameters":                map[string]any{"SerialNumber": "cb_0r_00_00_00_01"},
	}))
	if res != "accepted" || body["thingName"] != "gg_cb_0r_00_00_00_01" {
		t.Fatalf("RegisterThing in CBOR: %s %v", res, body)
	}
	if dc, ok := body["deviceConfiguration"].(map[string]any); !ok || len(dc) != 0 {
		t.Errorf("deviceConfiguration %#v, want an empty CBOR map", body["deviceConfiguration"])
	}
}

// CBOR is decoded strictly: a wrong type, a byte string for text, a
// repeated key, trailing bytes or JSON on a cbor topic is 400
// InvalidPayload, answered in CBOR.
func TestCBORRejections(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	cb := testCodec(t, "cbor")
	csr := csrPEM(t, newKey(t))
	// A map with certificateSigningRequest twice (0xa2: two pairs; 0x78 0x19:
	// a 25-byte text key).
	key := append([]byte{0x78, 0x19}, "certificateSigningRequest"...)
	dup := append(append(append(append([]byte{0xa2}, key...), 0x61, 'a'), key...), 0x61, 'b')

	tests := []struct {
		name    string
		topic   string
		payload []byte
		code    string
		msg     string // exact, or a prefix when it ends in "..."
	}{
		{"csr is a number", topicCSRCBOR, cb.enc(map[string]any{"certificateSigningRequest": 5}), CodeInvalidPayload, "Invalid request payload: cbor: cannot unmarshal positive integer..."},
		{"csr is a byte string", topicCSRCBOR, cb.enc(map[string]any{"certificateSigningRequest": []byte(csr)}), CodeInvalidPayload, "Invalid request payload: cbor: cannot unmarshal byte string..."},
		{"key repeated", topicCSRCBOR, dup, CodeInvalidPayload, "Invalid request payload: cbor: found duplicate map key..."},
		{"trailing bytes", topicCSRCBOR, append(cb.enc(map[string]any{"certificateSigningRequest": csr}), 0x00), CodeInvalidPayload, "Invalid request payload: cbor: 1 bytes of extraneous data..."},
		{"JSON on the cbor topic", topicCSRCBOR, []byte(`{"certificateSigningRequest":"x"}`), CodeInvalidPayload, "Invalid request payload: ..."},
		{"empty", topicCSRCBOR, nil, CodeInvalidPayload, "Invalid request payload: empty CBOR payload"},
		{"key spelled in another case", topicCSRCBOR, cb.enc(map[string]any{"CertificateSigningRequest": csr}), CodeInvalidPayload, "Certificate signing request cannot be empty."},
		{"parameter is a number", topicRegisterCBOR, cb.enc(map[string]any{"certificateOwnershipToken": "x", "parameters": map[string]any{"SerialNumber": 5}}), CodeInvalidPayload, "Invalid request payload: ..."},
		{"token missing", topicRegisterCBOR, cb.enc(map[string]any{"parameters": map[string]any{}}), CodeInvalidCertificateOwnershipToken, "Certificate ownership token cannot be empty."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := c.callFormat(cb, tt.topic, tt.payload)
			if res != "rejected" || body["statusCode"] != 400.0 || body["errorCode"] != tt.code {
				t.Fatalf("%s %v, want rejected 400 %s", res, body, tt.code)
			}
			msg, _ := body["errorMessage"].(string)
			if prefix, ok := strings.CutSuffix(tt.msg, "..."); ok {
				if !strings.HasPrefix(msg, prefix) {
					t.Errorf("errorMessage %q, want %q...", msg, prefix)
				}
			} else if msg != tt.msg {
				t.Errorf("errorMessage %q, want %q", msg, tt.msg)
			}
		})
	}
}

// CreateKeysAndCertificate takes an empty payload (the docs), `{}` (the
// SDKs) or CBOR a0, and returns a working RSA-2048 key and a pending
// certificate for it, whose token registers the device like the CSR
// flow's.
func TestCreateKeysAndCertificate(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	if err := c.subscribe(topicCreateJSON+"/+", topicCreateCBOR+"/+"); err != nil {
		t.Fatalf("the claim may not subscribe to the CreateKeysAndCertificate answers: %v", err)
	}
	cases := []struct {
		name, format string
		payload      []byte
	}{
		{"empty payload", "json", nil},
		{"{}", "json", []byte("{ }")},
		{"CBOR a0", "cbor", []byte{0xa0}},
	}
	var first map[string]any
	for _, tc := range cases {
		codec := testCodec(t, tc.format)
		res, body := c.callFormat(codec, "$aws/certificates/create/"+tc.format, tc.payload)
		if res != "accepted" {
			t.Fatalf("%s: %s %v", tc.name, res, body)
		}
		if got, want := keysOf(body), []string{"certificateId", "certificateOwnershipToken", "certificatePem", "privateKey"}; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: keys %v, want %v", tc.name, got, want)
		}
		if first == nil {
			first = body
		}
	}

	keyBlock, _ := pem.Decode([]byte(first["privateKey"].(string)))
	if keyBlock == nil || keyBlock.Type != "RSA PRIVATE KEY" {
		t.Fatalf("privateKey is not an RSA PRIVATE KEY PEM: %q", first["privateKey"])
	}
	key, err := x509.ParsePKCS1PrivateKey(keyBlock.Bytes)
	if err != nil || key.N.BitLen() != 2048 {
		t.Fatalf("privateKey: %v, want RSA 2048", err)
	}
	pair, err := tls.X509KeyPair([]byte(first["certificatePem"].(string)), []byte(first["privateKey"].(string)))
	if err != nil {
		t.Fatalf("certificate and key do not match: %v", err)
	}
	cert, _ := x509.ParseCertificate(pair.Certificate[0])
	if !cert.PublicKey.(*rsa.PublicKey).Equal(key.Public()) || CertificateID(cert.Raw) != first["certificateId"] {
		t.Errorf("certificateId or certificate does not belong to the returned key")
	}
	reg, _ := ReadRegistry(e.dir)
	if got := reg.Certificates[first["certificateId"].(string)].Status; got != StatusPendingActivation {
		t.Errorf("new certificate is %s, want PENDING_ACTIVATION", got)
	}
	if _, err := e.dial(t, pair); err == nil {
		t.Errorf("a PENDING_ACTIVATION certificate connected")
	}

	p := provisioned{token: first["certificateOwnershipToken"].(string)}
	register(t, c, &p, "ce_47_00_00_00_01")
	if _, err := e.dial(t, pair); err != nil {
		t.Errorf("registered certificate from CreateKeysAndCertificate refused: %v", err)
	}
}

// A request that is not an object is refused without making a key.
func TestCreateKeysAndCertificateRejections(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	for _, tc := range []struct {
		name, format string
		payload      []byte
		msg          string
	}{
		{"JSON array", "json", []byte("[]"), "Invalid request payload: json: cannot unmarshal array into Go value of type map[string]interface {}"},
		{"JSON null", "json", []byte("null"), "Invalid request payload: payload is null, want an empty object"},
		{"JSON text", "json", []byte(`"create"`), "Invalid request payload: json: cannot unmarshal string into Go value of type map[string]interface {}"},
		{"not JSON", "json", []byte("{"), "Invalid request payload: unexpected end of JSON input"},
		{"CBOR array", "cbor", []byte{0x80}, "Invalid request payload: cbor: cannot unmarshal array into Go value of type map[string]interface {}"},
		{"CBOR integer", "cbor", []byte{0x05}, "Invalid request payload: cbor: cannot unmarshal positive integer into Go value of type map[string]interface {}"},
	} {
		codec := testCodec(t, tc.format)
		res, body := c.callFormat(codec, "$aws/certificates/create/"+tc.format, tc.payload)
		if res != "rejected" || body["statusCode"] != 400.0 || body["errorCode"] != CodeInvalidPayload || body["errorMessage"] != tc.msg {
			t.Errorf("%s: %s %v, want rejected 400 InvalidPayload %q", tc.name, res, body, tc.msg)
		}
	}
	reg, _ := ReadRegistry(e.dir)
	if len(reg.Certificates) != 1 {
		t.Errorf("%d certificates after refused requests, want only the claim", len(reg.Certificates))
	}
}
