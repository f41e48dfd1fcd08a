// Command bad is a misbehaving test plugin; FLEETPROV_TESTPLUGIN_MODE says
// how: "crash" panics inside CreateKey, "hang" never answers CreateKey,
// "version" speaks plugin protocol version 2, "exit" exits before the
// handshake, "mute" never makes its handshake.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/hashicorp/go-plugin"

	"github.com/fleetprov/fleetprov/plugins/internal/wire"
	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/sdk"
)

type misbehaving struct {
	keystore.KeyStore
	mode string
}

func (m misbehaving) CreateKey(ctx context.Context, req *keystore.CreateKeyRequest) (*keystore.CreateKeyResponse, error) {
	switch m.mode {
	case "crash":
		panic("bad plugin: crashing in CreateKey as asked")
	case "hang":
		select {}
	}
	return m.KeyStore.CreateKey(ctx, req)
}

func main() {
	mode := os.Getenv("FLEETPROV_TESTPLUGIN_MODE")
	ks := misbehaving{KeyStore: keystore.NewMemory(), mode: mode}
	switch mode {
	case "exit":
		fmt.Fprintln(os.Stderr, "bad plugin: exiting before the handshake as asked")
		os.Exit(4)
	case "mute":
		select {}
	case "version":
		hs := wire.Handshake
		hs.ProtocolVersion = wire.ProtocolVersion + 1
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig: hs,
			Plugins:         plugin.PluginSet{wire.KeyStoreName: &wire.KeyStorePlugin{Impl: ks}},
			GRPCServer:      plugin.DefaultGRPCServer,
		})
		return
	}
	sdk.Serve(sdk.Plugins{KeyStore: ks})
}
