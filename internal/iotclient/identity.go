package iotclient

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/eclipse/paho.golang/autopaho"
)

// ConnectOnce connects as o says, normally with a device's own certificate
// in o.ClientCert and its thing name as the client id, and disconnects:
// proof that the cloud takes that identity. It fails as Dial does: a
// refusal (see Refusal) is fatal, no network is transient.
func ConnectOnce(ctx context.Context, o Options) error {
	o.dialLevel = slog.LevelDebug
	c, err := Dial(ctx, o)
	if err != nil {
		return err
	}
	// The cloud took the connection: that was the question. A DISCONNECT
	// that does not go through changes nothing of the answer.
	if err := c.Close(); err != nil {
		c.log.Warn("disconnect after a successful connection failed", slog.Any("error", err))
	}
	return nil
}

// Refusal tells how the server refused a connection Dial could not make:
// in its CONNACK, with a reason code other than success (what AWS IoT does
// when no policy of the certificate allows iot:Connect for the client id),
// or in the TLS handshake, with an alert about our certificate (what AWS
// IoT does with one that is not ACTIVE or whose CA it does not know). ok
// is false for every other failure.
func Refusal(err error) (reasonCode byte, alert string, ok bool) {
	var cerr *autopaho.ConnackError
	if errors.As(err, &cerr) && cerr.ReasonCode != 0 {
		return cerr.ReasonCode, "", true
	}
	if err == nil {
		return 0, "", false
	}
	msg := err.Error()
	for _, s := range tlsRejectedByPeer {
		if strings.Contains(msg, s) {
			return 0, strings.TrimPrefix(s, "remote error: tls: "), true
		}
	}
	return 0, "", false
}

// ReasonName is the MQTT 5 name of a CONNACK reason code, for messages.
func ReasonName(code byte) string {
	switch code {
	case 0x80:
		return "unspecified error"
	case 0x84:
		return "unsupported protocol version"
	case 0x85:
		return "client identifier not valid"
	case 0x86:
		return "bad user name or password"
	case 0x87:
		return "not authorized"
	case 0x88:
		return "server unavailable"
	case 0x89:
		return "server busy"
	case 0x8A:
		return "banned"
	case 0x8C:
		return "bad authentication method"
	case 0x97:
		return "quota exceeded"
	case 0x9F:
		return "connection rate exceeded"
	}
	return "refused"
}
