// Package wire is the plugin boundary shared by the host (plugins/host)
// and the plugin side (plugins/sdk): the handshake, the go-plugin plugin
// types and the gRPC shims that turn each Go interface in plugins/ into
// calls on the services of plugins/internal/pluginpb and back.
package wire

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// ProtocolVersion is the plugin protocol this build speaks. Raise it when
// a change to plugins.proto would make an older peer misread a message; a
// plugin of another version is refused at the handshake with a clear
// error instead.
const ProtocolVersion = 1

// Handshake is what host and plugin must agree on before anything else.
// The cookie is not a secret: it only stops a plugin binary run by hand
// from waiting for a host that will never come (go-plugin prints a hint
// and exits).
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "FLEETPROV_PLUGIN",
	MagicCookieValue: "6d1b7c3e-fleetprov-plugin",
}

// Names under which each interface is served. One plugin binary may serve
// any of them.
const (
	KeyStoreName    = "keystore"
	ParamSourceName = "paramsource"
	HookName        = "hook"
)

// remoteError is an error a plugin answered with, as the host sees it.
type remoteError struct {
	msg    string
	target error // a sentinel the error also is (errors.Is), or nil
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.target }

// toStatus turns an implementation's error into a gRPC status, keeping
// the distinctions the host acts on: a missing key, a transient failure.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isWrapped(err) {
		return err
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, keystore.ErrKeyNotFound):
		code = codes.NotFound
	case errors.Is(err, keystore.ErrKeyExists):
		code = codes.AlreadyExists
	case errors.Is(err, errors.ErrUnsupported):
		code = codes.Unimplemented
	case failure.IsTransient(err):
		// Not Unavailable: the host reads that as a lost connection
		// and checks whether the plugin crashed.
		code = codes.Aborted
	}
	return status.Error(code, err.Error())
}

// isWrapped is true when err is not itself a status error but wraps one;
// status.FromError accepts both.
func isWrapped(err error) bool {
	_, direct := err.(interface{ GRPCStatus() *status.Status })
	return !direct
}

// fromStatus turns a status the plugin answered with into an error naming
// the plugin and the call. Errors that are not statuses come from the
// host's own machinery (plugins/host's timeouts and crash detection) and
// pass unchanged.
func fromStatus(plugin, call string, err error) error {
	if err == nil {
		return nil
	}
	if _, direct := err.(interface{ GRPCStatus() *status.Status }); !direct {
		return err
	}
	st := status.Convert(err)
	msg := fmt.Sprintf("plugin %s: %s: %s", plugin, call, st.Message())
	switch st.Code() {
	case codes.NotFound:
		return &remoteError{msg: msg, target: keystore.ErrKeyNotFound}
	case codes.AlreadyExists:
		return &remoteError{msg: msg, target: keystore.ErrKeyExists}
	case codes.Unimplemented:
		if strings.HasPrefix(st.Message(), "unknown service") {
			msg = fmt.Sprintf("plugin %s does not serve this interface: build it with the implementation set in sdk.Plugins (it answered: %s)", plugin, st.Message())
		}
		return &remoteError{msg: msg, target: errors.ErrUnsupported}
	case codes.DeadlineExceeded:
		// The call's deadline passed: the caller's, as the in-process
		// key stores and the plugin host report it.
		return failure.Transient(&remoteError{msg: msg, target: context.DeadlineExceeded})
	case codes.Unavailable, codes.ResourceExhausted, codes.Aborted:
		return failure.Transient(&remoteError{msg: msg})
	}
	return &remoteError{msg: msg}
}
