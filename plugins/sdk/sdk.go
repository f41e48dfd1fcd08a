// Package sdk turns a Go program into a fleetprov plugin. A plugin's main
// builds its implementations and hands them to Serve:
//
//	func main() {
//		sdk.Serve(sdk.Plugins{ParamSource: eepromSerial{path: "/sys/bus/i2c/devices/0-0050/eeprom"}})
//	}
//
// One binary may serve a KeyStore, a ParamSource and a Hook at once.
// fleetprov starts the binary when it first needs it, talks to it over
// gRPC on a mutually authenticated local connection, and stops it when the
// run ends. The plugin's stderr is fleetprov's log: write to it with the
// logger Logger returns (or any line-oriented text), never to stdout, which
// carries the handshake.
package sdk

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/hook"
	"github.com/fleetprov/fleetprov/plugins/internal/wire"
	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// ProtocolVersion is the plugin protocol version this SDK speaks; fleetprov
// refuses a plugin of another version with an error naming both.
const ProtocolVersion = wire.ProtocolVersion

// Plugins are the implementations a binary serves; leave out what it does
// not implement.
type Plugins struct {
	KeyStore    keystore.KeyStore
	ParamSource paramsource.ParamSource
	Hook        hook.Hook
}

// Serve serves p until fleetprov stops the plugin, then exits the process.
// Run by hand rather than by fleetprov, the binary prints that it is a
// plugin and exits with status 1.
func Serve(p Plugins) {
	set := plugin.PluginSet{}
	if p.KeyStore != nil {
		set[wire.KeyStoreName] = &wire.KeyStorePlugin{Impl: p.KeyStore}
	}
	if p.ParamSource != nil {
		set[wire.ParamSourceName] = &wire.ParamSourcePlugin{Impl: p.ParamSource}
	}
	if p.Hook != nil {
		set[wire.HookName] = &wire.HookPlugin{Impl: p.Hook}
	}
	if len(set) == 0 {
		fmt.Fprintln(os.Stderr, "sdk.Serve: no implementation given: set KeyStore, ParamSource or Hook in sdk.Plugins")
		os.Exit(1)
	}
	go exitWhenOrphaned(os.Getppid(), time.Second)
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: wire.Handshake,
		Plugins:         set,
		// Without a GRPCServer go-plugin would serve net/rpc, which
		// fleetprov does not speak.
		GRPCServer: plugin.DefaultGRPCServer,
		Logger:     hclog.New(&hclog.LoggerOptions{Output: os.Stderr, JSONFormat: true, Level: hclog.Trace}),
	})
	if p.KeyStore != nil {
		_ = p.KeyStore.Close()
	}
}

// exitWhenOrphaned ends the plugin once the fleetprov that started it is
// gone. fleetprov stops its plugins on every exit it can act on; this
// covers the ones it cannot (SIGKILL, a crash in another goroutine).
func exitWhenOrphaned(parent int, every time.Duration) {
	for {
		time.Sleep(every)
		if os.Getppid() != parent {
			os.Exit(0)
		}
	}
}

// Logger returns a logger whose records reach fleetprov's log, at their
// level and with their attributes, tagged with the plugin's name.
func Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			// The host stamps each line as it reads it; the keys below
			// are the ones it parses.
			switch a.Key {
			case slog.TimeKey:
				return slog.Attr{}
			case slog.LevelKey:
				return slog.String("@level", strings.ToLower(a.Value.String()))
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			}
			return a
		},
	}))
}

// Transient marks err as worth retrying: fleetprov retries the step with
// backoff, as it does a network error. Other errors fail the run.
func Transient(err error) error { return failure.Transient(err) }
