package iotclient

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"
)

// Kinds of answer FuzzAnswer decodes, by its first argument (modulo the
// count).
const (
	fuzzCSRAccepted = iota
	fuzzKeysAccepted
	fuzzRegisterAccepted
	fuzzRejected
	fuzzKinds
)

// fuzzNow is the device clock of FuzzAnswer: inside the validity of the
// certificates in the seeds.
var fuzzNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// FuzzAnswer feeds payloads to the decoding and validation of the cloud's
// answers: go test -fuzz FuzzAnswer ./internal/iotclient. The first
// argument picks the answer (CreateCertificateFromCsr accepted,
// CreateKeysAndCertificate accepted, RegisterThing accepted, any
// rejection), the second JSON or CBOR. The seeds in
// testdata/fuzz/FuzzAnswer (answers as AWS sends them, in both formats,
// and hostile ones) run as a normal test. The steps are those the
// request methods of Client take after the answer arrives; the device key
// the CSR answers are checked against is testdata/fuzz-device-key.pem.
//
// What must hold for any payload:
//   - an accepted answer that passes holds only what a device may keep: a
//     single certificate for the device's key whose id is its SHA-256, a
//     private key matching it, a thing name by AWS's rule, fields within
//     their limits;
//   - a payload that decodes encodes back to one that decodes to the
//     same value, in both formats, and is judged the same;
//   - a refusal is one line without control characters, bounded in
//     length, and never quotes the private key; a rejection is a
//     *Rejection whose fields are bounded.
func FuzzAnswer(f *testing.F) {
	devicePub := fuzzDeviceKey(f)
	jc, cc := jsonCodec{}, newCBORCodec()
	f.Fuzz(func(t *testing.T, kind uint8, useCBOR bool, payload []byte) {
		c := codec(jc)
		if useCBOR {
			c = cc
		}
		v, err := decodeAnswer(c, kind%fuzzKinds, payload, devicePub)
		if err != nil {
			var key createKeysAndCertificateAccepted
			_ = c.unmarshal(payload, &key)
			checkRefusal(t, err, key.PrivateKey)
		}
		if v == nil {
			return
		}
		// The decoded value, encoded by either codec and decoded again,
		// is the same value and gets the same verdict.
		for _, re := range []codec{jc, cc} {
			b, merr := re.marshal(v)
			if merr != nil {
				t.Fatalf("decoded %#v does not encode as %s: %v", v, re.name(), merr)
			}
			v2, err2 := decodeAnswer(re, kind%fuzzKinds, b, devicePub)
			if !reflect.DeepEqual(v, v2) {
				t.Fatalf("%s round trip: %#v became %#v", re.name(), v, v2)
			}
			if errString(err) != errString(err2) {
				t.Fatalf("%s round trip changes the verdict: %v then %v", re.name(), err, err2)
			}
		}
		if err != nil {
			return
		}
		switch a := v.(type) {
		case *createCertificateFromCsrAccepted:
			checkCertificate(t, a.CertificatePEM, a.CertificateID, a.CertificateOwnershipToken, devicePub)
		case *createKeysAndCertificateAccepted:
			pub, err := privateKeyPublic(a.PrivateKey)
			if err != nil {
				t.Fatalf("accepted a private key that does not parse: %v", err)
			}
			checkCertificate(t, a.CertificatePEM, a.CertificateID, a.CertificateOwnershipToken, pub)
			if len(a.PrivateKey) > maxPrivateKeyPEM {
				t.Fatalf("accepted a %d-byte private key", len(a.PrivateKey))
			}
		case *registerThingAccepted:
			if !validThingName(a.ThingName) {
				t.Fatalf("accepted thing name %q", a.ThingName)
			}
			if len(a.DeviceConfiguration) > maxDeviceConfigKeys {
				t.Fatalf("accepted %d deviceConfiguration keys", len(a.DeviceConfiguration))
			}
			for k, val := range a.DeviceConfiguration {
				if k == "" || len(k) > maxDeviceConfigKey || strings.ContainsFunc(k, isControl) || len(val) > maxDeviceConfigVal {
					t.Fatalf("accepted deviceConfiguration %q: %d bytes", k, len(val))
				}
			}
		case *rejectedPayload:
			t.Fatalf("a rejection decoded without an error")
		}
	})
}

// decodeAnswer takes the steps a Client request method takes once an
// answer of the kind arrives, returning the decoded payload (nil when it
// does not decode) and the error the method would return.
func decodeAnswer(c codec, kind uint8, payload []byte, devicePub crypto.PublicKey) (any, error) {
	cl := &Client{codec: c, log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: func() time.Time { return fuzzNow }}
	const topic = "$aws/fuzz/accepted"
	switch kind {
	case fuzzCSRAccepted:
		const op = opCreateCertificateFromCsr
		var p createCertificateFromCsrAccepted
		if err := c.unmarshal(payload, &p); err != nil {
			return nil, fmt.Errorf("iotclient: %s: malformed answer on %s: %w", op, topic, err)
		}
		res := &CertificateResult{CertificateID: p.CertificateID, CertificatePEM: p.CertificatePEM, OwnershipToken: p.CertificateOwnershipToken}
		if err := checkCertificateAnswer(op, topic, res, nil); err != nil {
			return &p, err
		}
		if why := validateCertificate(res, certCheck{now: cl.now, key: devicePub, keyName: "the device key in the CSR"}); why != "" {
			return &p, fmt.Errorf("iotclient: %s: refused answer on %s: %s", op, topic, why)
		}
		return &p, nil
	case fuzzKeysAccepted:
		const op = opCreateKeysAndCertificate
		var p createKeysAndCertificateAccepted
		if err := c.unmarshal(payload, &p); err != nil {
			return nil, fmt.Errorf("iotclient: %s: malformed answer on %s (%d bytes)", op, topic, len(payload))
		}
		res := &CertificateResult{CertificateID: p.CertificateID, CertificatePEM: p.CertificatePEM, OwnershipToken: p.CertificateOwnershipToken}
		if err := checkCertificateAnswer(op, topic, res, &p.PrivateKey); err != nil {
			return &p, err
		}
		if len(p.PrivateKey) > maxPrivateKeyPEM {
			return &p, fmt.Errorf("iotclient: %s: refused answer on %s: privateKey is %d bytes, over the %d-byte limit", op, topic, len(p.PrivateKey), maxPrivateKeyPEM)
		}
		pub, err := privateKeyPublic(p.PrivateKey)
		if err != nil {
			return &p, fmt.Errorf("iotclient: %s: refused answer on %s: %w", op, topic, err)
		}
		if why := validateCertificate(res, certCheck{now: cl.now, key: pub, keyName: "the privateKey sent with it"}); why != "" {
			return &p, fmt.Errorf("iotclient: %s: refused answer on %s: %s", op, topic, why)
		}
		return &p, nil
	case fuzzRegisterAccepted:
		const op = opRegisterThing
		var p registerThingAccepted
		if err := c.unmarshal(payload, &p); err != nil {
			return nil, fmt.Errorf("iotclient: %s: malformed answer on %s: %w", op, topic, err)
		}
		if p.ThingName == "" {
			return &p, fmt.Errorf("iotclient: %s: malformed answer on %s: empty or missing thingName", op, topic)
		}
		if why := validateRegistration(&p); why != "" {
			return &p, fmt.Errorf("iotclient: %s: refused answer on %s: %s", op, topic, why)
		}
		return &p, nil
	default:
		var p rejectedPayload
		if c.unmarshal(payload, &p) != nil {
			p = rejectedPayload{}
		}
		err := cl.decodeRejection(opRegisterThing, answer{topic: "$aws/fuzz/rejected", rejected: true, payload: payload})
		if err == nil {
			return nil, errors.New("decodeRejection returned no error")
		}
		var r *Rejection
		if errors.As(err, &r) {
			if len(r.ErrorCode) > maxErrorCode+32 || len(r.ErrorMessage) > maxErrorMessage+32 {
				return nil, fmt.Errorf("rejection fields not bounded: %d and %d bytes", len(r.ErrorCode), len(r.ErrorMessage))
			}
			if p.StatusCode == nil || r.StatusCode != *p.StatusCode {
				return nil, fmt.Errorf("rejection statusCode %d, payload %v", r.StatusCode, p.StatusCode)
			}
		} else if p.StatusCode != nil && c.unmarshal(payload, &rejectedPayload{}) == nil {
			return nil, fmt.Errorf("a rejection with statusCode %d gave %T: %v", *p.StatusCode, err, err)
		}
		return nil, err
	}
}

// checkRefusal holds an error to what a user may be shown. privateKey is
// the key the answer carried, if any.
func checkRefusal(t *testing.T, err error, privateKey string) {
	t.Helper()
	msg := err.Error()
	if len(msg) > 8192 {
		t.Fatalf("error is %d bytes long", len(msg))
	}
	if strings.ContainsFunc(msg, func(r rune) bool { return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' }) {
		t.Fatalf("error holds a control character: %q", msg)
	}
	// No line of the key, nor a run of 16 bytes of any line, may reach
	// a message.
	for _, line := range strings.Split(privateKey, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "-----") {
			continue
		}
		for j := 0; j+16 <= len(line); j += 4 {
			// Base64 as a key is written, and not only hex digits,
			// which a message may rightly hold (a certificate id).
			run := line[j : j+16]
			if strings.Trim(run, base64Chars) != "" || strings.Trim(run, "0123456789abcdef") == "" {
				continue
			}
			if strings.Contains(msg, run) {
				t.Fatalf("error quotes the private key: %q", msg)
			}
		}
	}
}

const base64Chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="

// checkCertificate holds an accepted certificate to what a device keeps.
func checkCertificate(t *testing.T, certPEM, id, token string, key crypto.PublicKey) {
	t.Helper()
	if len(certPEM) > maxCertificatePEM || len(token) == 0 || len(token) > maxOwnershipToken {
		t.Fatalf("accepted a %d-byte certificate and a %d-byte token", len(certPEM), len(token))
	}
	blk, rest := pem.Decode([]byte(certPEM))
	if blk == nil || strings.TrimSpace(string(rest)) != "" {
		t.Fatalf("accepted certificatePem that is not exactly one PEM block")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("accepted a certificate that does not parse: %v", err)
	}
	if sum := sha256.Sum256(cert.Raw); hex.EncodeToString(sum[:]) != id {
		t.Fatalf("accepted certificate id %q for a certificate whose SHA-256 is %x", id, sum)
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key) {
		t.Fatalf("accepted a certificate for another key")
	}
	if fuzzNow.Add(clockSkew).Before(cert.NotBefore) || fuzzNow.Add(-clockSkew).After(cert.NotAfter) {
		t.Fatalf("accepted a certificate valid %s to %s at %s", cert.NotBefore, cert.NotAfter, fuzzNow)
	}
}

// fuzzDeviceKey is the public half of the device key the CSR answers in
// the seeds were issued for.
func fuzzDeviceKey(f *testing.F) crypto.PublicKey {
	b, err := os.ReadFile("testdata/fuzz-device-key.pem")
	if err != nil {
		f.Fatal(err)
	}
	pub, err := privateKeyPublic(string(b))
	if err != nil {
		f.Fatal(err)
	}
	return pub
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
