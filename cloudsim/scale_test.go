package cloudsim

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Two hundred devices provision at once through one claim, half in JSON
// and half in CBOR, half subscribed and half not: each gets a certificate
// for its own key and its own thing, and hears exactly its own two
// answers.
func TestManyDevicesAtOnce(t *testing.T) {
	const n = 200
	// The server's deadline for TLS and CONNECT (10 s) guards against a
	// client that stalls; 200 handshakes at once under -race on a loaded
	// machine can outlast it, which cut a claim connection short (broken
	// pipe) at load 26. What this test checks is that none of 200 devices
	// is lost or crossed, so the deadline is as long as the test's waits.
	e := startEnv(t, Options{ConnectTimeout: waitLimit})
	claim := e.claimCert(t)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			format := []string{"json", "cbor"}[i%2]
			codec := testCodec(t, format)
			csrTopic := "$aws/certificates/create-from-csr/" + format
			regTopic := "$aws/provisioning-templates/GreengrassFleetProvisioningTemplate/provision/" + format
			c, err := e.dial(t, claim)
			if err != nil {
				errs <- fmt.Errorf("device %d connect: %w", i, err)
				return
			}
			if i%4 < 2 {
				if err := c.subscribe(csrTopic+"/+", regTopic+"/+"); err != nil {
					errs <- fmt.Errorf("device %d subscribe: %w", i, err)
					return
				}
			}
			key := newKey(t)
			res, payload, err := c.callWait(csrTopic, codec.enc(map[string]any{"certificateSigningRequest": csrPEM(t, key)}), 2*waitLimit)
			if err != nil || res != "accepted" {
				errs <- fmt.Errorf("device %d (%s) CreateCertificateFromCsr: %s %q %v", i, format, res, payload, err)
				return
			}
			body := codec.dec(payload)
			block, _ := pem.Decode([]byte(body["certificatePem"].(string)))
			if block == nil {
				errs <- fmt.Errorf("device %d: certificatePem is not PEM", i)
				return
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil || !cert.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
				errs <- fmt.Errorf("device %d got a certificate for another device's key", i)
				return
			}
			serial := fmt.Sprintf("5c_a1_e0_00_%02x_%02x", i/256, i%256)
			res, payload, err = c.callWait(regTopic, codec.enc(map[string]any{
				"certificateOwnershipToken": body["certificateOwnershipToken"],
				"parameters":                map[string]any{"SerialNumber": serial},
			}), 2*waitLimit)
			if err != nil || res != "accepted" {
				errs <- fmt.Errorf("device %d (%s) RegisterThing: %s %q %v", i, format, res, payload, err)
				return
			}
			if got := codec.dec(payload)["thingName"]; got != "gg_"+serial {
				errs <- fmt.Errorf("device %d got thing %v, want gg_%s", i, got, serial)
				return
			}
			time.Sleep(200 * time.Millisecond) // let a stray answer arrive
			c.mu.Lock()
			seen := append([]string(nil), c.seen...)
			c.mu.Unlock()
			if len(seen) != 2 {
				errs <- fmt.Errorf("device %d received %d messages, want its own 2: %v", i, len(seen), seen)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d devices provisioned in %v", n, time.Since(start).Round(time.Millisecond))
	reg, _ := ReadRegistry(e.dir)
	if len(reg.Things) != n || len(reg.Certificates) != n+1 {
		t.Errorf("registry has %d things and %d certificates, want %d and %d", len(reg.Things), len(reg.Certificates), n, n+1)
	}
	for _, th := range reg.Things {
		if len(th.Principals) != 1 {
			t.Errorf("thing %s has %d certificates, want 1", th.Name, len(th.Principals))
		}
	}
}
