package iotclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"github.com/eclipse/paho.golang/autopaho"

	"github.com/fleetprov/fleetprov/failure"
)

// Rejection is an answer on a .../rejected topic. Callers get it with
// errors.As; it comes wrapped with failure.Transient when AWS says to try
// again later (5xx, 429, throttling).
type Rejection struct {
	Operation    string
	StatusCode   int
	ErrorCode    string
	ErrorMessage string
}

func (r *Rejection) Error() string {
	return fmt.Sprintf("%s rejected: statusCode=%d errorCode=%q errorMessage=%q",
		r.Operation, r.StatusCode, r.ErrorCode, r.ErrorMessage)
}

// Retryable reports whether AWS asks to come back later rather than saying
// the request itself is wrong.
func (r *Rejection) Retryable() bool {
	if r.StatusCode >= 500 || r.StatusCode == 429 {
		return true
	}
	switch r.ErrorCode {
	case "Throttling", "ThrottlingException", "ServiceUnavailable", "ServiceUnavailableException",
		"InternalFailure", "InternalFailureException", "InternalException":
		return true
	}
	return false
}

// classifyRejection returns r as an error, marked transient when retryable.
func classifyRejection(r *Rejection) error {
	if r.Retryable() {
		return failure.Transient(r)
	}
	return r
}

// tlsRejectedByPeer lists the TLS alerts a server sends when it refuses our
// certificate (or the handshake over certificates): retrying the same
// certificate cannot help. The alert type is unexported in crypto/tls and
// paho flattens some errors to strings, so match the text.
var tlsRejectedByPeer = []string{
	"remote error: tls: bad certificate",
	"remote error: tls: unknown certificate authority",
	"remote error: tls: certificate required",
	"remote error: tls: unsupported certificate",
	"remote error: tls: certificate revoked",
	"remote error: tls: expired certificate",
	"remote error: tls: unknown certificate",
	"remote error: tls: access denied",
}

// isFatalConnectError reports whether a failed connection attempt will fail
// the same way every time: the server's certificate does not verify against
// our root CA, the server refuses our certificate, or the server refuses us
// in CONNACK for reasons that need a config change.
func isFatalConnectError(err error) bool {
	if err == nil {
		return false
	}
	// Before the text matching below: a proxy's answer is the proxy's
	// verdict, whatever words it holds.
	var perr *ProxyError
	if errors.As(err, &perr) {
		return !perr.Transient()
	}
	var (
		verr  *tls.CertificateVerificationError
		uaerr x509.UnknownAuthorityError
		herr  x509.HostnameError
		cierr x509.CertificateInvalidError
		rherr tls.RecordHeaderError
	)
	if errors.As(err, &verr) || errors.As(err, &uaerr) || errors.As(err, &herr) || errors.As(err, &cierr) {
		return true
	}
	// Talking TLS to a plain-MQTT port: a wrong endpoint or port.
	if errors.As(err, &rherr) {
		return true
	}
	var cerr *autopaho.ConnackError
	if errors.As(err, &cerr) {
		switch cerr.ReasonCode {
		case 0x84, // unsupported protocol version
			0x85, // client identifier not valid
			0x86, // bad user name or password
			0x87, // not authorized
			0x8A, // banned
			0x8C: // bad authentication method
			return true
		}
		return false
	}
	msg := err.Error()
	for _, s := range tlsRejectedByPeer {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return strings.Contains(msg, "tls: failed to verify certificate")
}

// fatalConnectHint says, for a fatal connect error, which side refused and
// what to check.
func fatalConnectHint(err error, o Options) string {
	var cerr *autopaho.ConnackError
	// A device's own certificate (ClientCert) is not the claim: the
	// hint must not send its user to the claim's policy or file.
	switch {
	case errors.As(err, &cerr) && o.ClientCert != nil:
		return fmt.Sprintf("the server refused the MQTT connection (CONNACK reason 0x%02x); check the certificate's policy and the client id", cerr.ReasonCode)
	case errors.As(err, &cerr):
		return fmt.Sprintf("the server refused the MQTT connection (CONNACK reason 0x%02x); check the claim policy and client id", cerr.ReasonCode)
	case strings.Contains(err.Error(), "remote error: tls:") && o.ClientCert != nil:
		return "the server refused the certificate; check that it is registered and active"
	case strings.Contains(err.Error(), "remote error: tls:"):
		return fmt.Sprintf("the server refused the claim certificate %s; check that it is registered and active", o.ClaimCertPath)
	default:
		var rherr tls.RecordHeaderError
		if errors.As(err, &rherr) {
			return "the server does not speak TLS on this port; check the endpoint and port"
		}
		return fmt.Sprintf("the server certificate does not verify against the root CA %s; check the root CA and the endpoint host name", o.RootCAPath)
	}
}

// isDialError reports a connection attempt that never reached the server:
// refused, unreachable, or a name that does not resolve. Each is known at
// once; waiting out the connect timeout would only hide it.
func isDialError(err error) bool {
	if err == nil {
		return false
	}
	// A proxy that is down or cannot reach the endpoint now: the cloud was
	// not reached either.
	var perr *ProxyError
	if errors.As(err, &perr) {
		return perr.Transient()
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}
