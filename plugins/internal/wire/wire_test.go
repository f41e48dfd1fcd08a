package wire_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hashicorp/go-plugin"

	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/hook"
	"github.com/fleetprov/fleetprov/plugins/hook/hooktest"
	"github.com/fleetprov/fleetprov/plugins/internal/pluginpb"
	"github.com/fleetprov/fleetprov/plugins/internal/wire"
	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/keystore/keystoretest"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
	"github.com/fleetprov/fleetprov/plugins/paramsource/paramsourcetest"
)

// The shims, both ends in this process over a real gRPC connection: the
// race detector sees the plugin side too, which it cannot in a plugin
// binary.

type coreOnly struct{ keystore.KeyStore }

// stop stops the server before closing the client: the client's Close
// asks the server to stop itself, which would race with a Stop of ours.
func stop(client *plugin.GRPCClient, server *plugin.GRPCServer) {
	server.Stop()
	client.Close()
}

func dispense(t *testing.T, set plugin.PluginSet, name string) any {
	t.Helper()
	client, server := plugin.TestPluginGRPCConn(t, false, set)
	t.Cleanup(func() { stop(client, server) })
	raw, err := client.Dispense(name)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestKeyStoreOverGRPC(t *testing.T) {
	ks := dispense(t, plugin.PluginSet{wire.KeyStoreName: &wire.KeyStorePlugin{Impl: keystore.NewMemory(), Name: "mem"}}, wire.KeyStoreName).(keystore.KeyStore)
	for _, ok := range []bool{
		func() bool { _, ok := ks.(keystore.KeyImporter); return ok }(),
		func() bool { _, ok := ks.(keystore.KeyDeleter); return ok }(),
		func() bool { _, ok := ks.(keystore.CertificateStorer); return ok }(),
	} {
		if !ok {
			t.Fatal("an optional ability of the memory store is missing on the host side")
		}
	}
	keystoretest.Run(t, keystoretest.Options{
		Open: func(*testing.T) keystore.KeyStore { return ks },
		URI:  func(_ *testing.T, name string) string { return "mem:" + name },
	})
}

// A host that calls an ability the plugin lacks anyway gets
// Unimplemented, seen as errors.ErrUnsupported.
func TestMissingAbilityIsUnimplemented(t *testing.T) {
	client, server := plugin.TestPluginGRPCConn(t, false, plugin.PluginSet{wire.KeyStoreName: &wire.KeyStorePlugin{Impl: coreOnly{keystore.NewMemory()}, Name: "core"}})
	defer stop(client, server)
	raw, err := client.Dispense(wire.KeyStoreName)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := raw.(keystore.KeyDeleter); ok {
		t.Fatal("a store without DeleteKey is seen as a KeyDeleter")
	}
	_, err = pluginpb.NewKeyStoreClient(client.Conn).DeleteKey(context.Background(), &pluginpb.DeleteKeyRequest{Uri: "x"})
	if err == nil || err.Error() != "rpc error: code = Unimplemented desc = this key store cannot delete keys: unsupported operation" {
		t.Fatalf("DeleteKey on a store without it: %v", err)
	}
}

func TestParamSourceOverGRPC(t *testing.T) {
	src := dispense(t, plugin.PluginSet{wire.ParamSourceName: &wire.ParamSourcePlugin{Impl: paramsourcetest.Echo{}, Name: "echo"}}, wire.ParamSourceName).(paramsource.ParamSource)
	paramsourcetest.Run(t, src)
	_, err := src.Params(context.Background(), &paramsource.ParamsRequest{TemplateName: "fail"})
	if want := "plugin echo: Params: echo: template fail always fails"; err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
}

func TestHookOverGRPC(t *testing.T) {
	h := dispense(t, plugin.PluginSet{wire.HookName: &wire.HookPlugin{Impl: hooktest.Mirror{}, Name: "mirror"}}, wire.HookName).(hook.Hook)
	hooktest.Run(t, h)
}

// A plugin that serves no key store: the host's lookup says so.
func TestInterfaceNotServed(t *testing.T) {
	client, server := plugin.TestPluginGRPCConn(t, false, plugin.PluginSet{wire.HookName: &wire.HookPlugin{Impl: hooktest.Mirror{}}})
	defer stop(client, server)
	_, err := wire.NewKeyStoreClient(context.Background(), "hooky", client.Conn)
	if !errors.Is(err, errors.ErrUnsupported) || failure.IsTransient(err) {
		t.Fatalf("key store of a hook-only plugin: %v", err)
	}
	if want := "plugin hooky does not serve this interface: build it with the implementation set in sdk.Plugins (it answered: unknown service fleetprov.plugins.v1.KeyStore)"; err.Error() != want {
		t.Errorf("error:\n %v\nwant\n %s", err, want)
	}
}
