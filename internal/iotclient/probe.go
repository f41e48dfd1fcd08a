package iotclient

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/fleetprov/fleetprov/failure"
)

// ProbeOptions name a certificate to present to the endpoint, and its key.
type ProbeOptions struct {
	Endpoint       string // host or host:port
	Port           int    // used when Endpoint has no port; 0 = 8883
	RootCAPath     string
	CertificatePEM string
	Key            crypto.Signer
	ALPN           string        // as Options.ALPN
	Timeout        time.Duration // the whole handshake; 0 = 30 s
	Proxy          *Proxy        // as Options.Proxy
}

// certificateRefusedAlerts are the TLS alerts a server sends when it will
// not authenticate a client certificate: AWS IoT answers a certificate that
// is not ACTIVE with one of them during the handshake.
var certificateRefusedAlerts = []string{
	"remote error: tls: bad certificate",
	"remote error: tls: unknown certificate",
	"remote error: tls: unsupported certificate",
	"remote error: tls: certificate revoked",
	"remote error: tls: expired certificate",
	"remote error: tls: unknown certificate authority",
	"remote error: tls: access denied",
}

// CertificateActive reports whether the endpoint accepts the certificate
// for a connection, which AWS IoT does only for an ACTIVE certificate: a
// pending, inactive or revoked one is refused in the TLS handshake.
//
// It is how a device finds out whether a registration it never heard the
// answer to went through, since RegisterThing is what activates a
// certificate and the fleet provisioning API has no other way to ask.
// The probe speaks TLS 1.2, where the server's verdict on the client
// certificate arrives before the handshake completes, so no MQTT is
// needed and none is sent.
//
// The answer is (true, nil) when the handshake completes, (false, nil)
// when the server refuses the certificate, and a transient error when it
// cannot tell (no connection, a timeout, a handshake failing for another
// reason): the caller must then not assume either.
func CertificateActive(ctx context.Context, o ProbeOptions) (bool, error) {
	host, port, err := splitEndpoint(o.Endpoint, o.Port)
	if err != nil {
		return false, err
	}
	if o.Key == nil {
		return false, errors.New("iotclient: probe: no key for the certificate")
	}
	block, _ := pem.Decode([]byte(o.CertificatePEM))
	if block == nil || block.Type != "CERTIFICATE" {
		return false, errors.New("iotclient: probe: the journaled certificate is not PEM")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return false, fmt.Errorf("iotclient: probe: the journaled certificate: %w", err)
	}
	// The claim connection's TLS settings (root CA, server name, ALPN),
	// with this certificate instead of the claim's.
	cfg, err := tlsConfig(Options{RootCAPath: o.RootCAPath, ALPN: o.ALPN,
		ClientCert: &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: o.Key, Leaf: leaf}}, host, port)
	if err != nil {
		return false, err
	}
	// In TLS 1.3 the client's handshake ends before the server has judged
	// the client certificate, and a refusal can then arrive as a reset
	// instead of an alert.
	cfg.MaxVersion = tls.VersionTLS12
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = defaultConnectTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	endpoint := net.JoinHostPort(host, strconv.Itoa(port))
	conn, err := dialer{tls: cfg, proxy: o.Proxy}.dial(ctx, endpoint)
	if err == nil {
		_ = conn.Close()
		return true, nil
	}
	msg := err.Error()
	for _, s := range certificateRefusedAlerts {
		if strings.Contains(msg, s) {
			return false, nil
		}
	}
	var perr *ProxyError
	if errors.As(err, &perr) && !perr.Transient() {
		return false, fmt.Errorf("iotclient: probe %s: %w", endpoint, perr)
	}
	if isFatalConnectError(err) {
		// The server's own certificate does not verify: the same root CA
		// and endpoint the claim connection uses, so the config is wrong.
		return false, fmt.Errorf("iotclient: probe %s: %w", endpoint, err)
	}
	err = failure.Transient(fmt.Errorf("iotclient: probe %s: cannot tell whether the certificate is active: %w", endpoint, err))
	if isDialError(err) {
		err = failure.Unreached(err)
	}
	return false, err
}
