// Package host runs the plugins a config names: it starts each one the
// first time something needs it, checks its binary's checksum, bounds every
// call with the plugin's timeout, turns a crash, a hang or a protocol
// mismatch into one error naming the plugin, routes the plugin's log into
// fleetprov's, and stops every plugin when the run ends.
//
// Lookups for the rest of fleetprov:
//   - keystore.Open("plugin:NAME/...") reaches the key store plugin NAME
//     of the open Host (the "plugin" scheme is registered by
//     plugins/internal/pluginkeys, which plugins/remote shares);
//   - (*Host).ParamSource(NAME) is plugin NAME's parameter source;
//   - (*Host).Hooks() lists the plugins the config marks as hooks.
//
// fleetprov itself does not link this package: the plugin host process
// (cmd/fleetprov-plugin-host) runs it, and fleetprov reaches it through
// plugins/remote, so that go-plugin and gRPC are linked only there. A
// build that prefers one process sets cli.Build.PluginHost to a Host; the
// CLI creates one per command and defers its Close, which also runs when
// a signal cancels the run or a panic unwinds it.
package host

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/plugins/hook"
	"github.com/fleetprov/fleetprov/plugins/internal/pluginkeys"
	"github.com/fleetprov/fleetprov/plugins/internal/wire"
	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// Scheme is the key URI scheme of key stores served by plugins:
// plugin:NAME/KEY, where NAME is a plugin in the config and KEY is the
// plugin's own name for the key. The plugin receives the whole URI.
const Scheme = pluginkeys.Scheme

// Options configure a Host.
type Options struct {
	// Plugins are the plugins section of the config.
	Plugins []config.Plugin
	// Logger receives the plugins' logs and stderr, with plugin=NAME.
	Logger *slog.Logger
}

// Host owns the plugin processes of one fleetprov command.
type Host struct {
	log     *slog.Logger
	plugins pluginkeys.Plugins

	mu      sync.Mutex
	running map[string]*instance
	closed  bool
}

// New returns a Host for the configured plugins; nothing starts until it
// is needed. It becomes the Host that plugin: key URIs resolve against.
func New(o Options) *Host {
	h := &Host{log: o.Logger, plugins: pluginkeys.Index(o.Plugins), running: map[string]*instance{}}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	pluginkeys.Activate(h)
	return h
}

// Close stops every plugin process this Host started and waits until they
// are gone. Lookups after Close fail. It is safe to call more than once.
func (h *Host) Close() error {
	pluginkeys.Deactivate(h)
	h.mu.Lock()
	h.closed = true
	running := h.running
	h.running = map[string]*instance{}
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, inst := range running {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inst.kill()
		}()
	}
	wg.Wait()
	return nil
}

// ErrClosed is returned by lookups after Close.
// plugins/remote returns the same error, so errors.Is finds it whichever
// host a program uses.
var ErrClosed = pluginkeys.ErrClosed

// instanceFor returns the running instance of plugin name, starting it if
// it is not running (first use, or after it crashed or was stopped for
// hanging).
func (h *Host) instanceFor(name string) (*instance, error) {
	spec, err := h.plugins.Spec(name)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, fmt.Errorf("plugin %s: %w", name, ErrClosed)
	}
	if inst := h.running[name]; inst != nil && inst.alive() {
		return inst, nil
	}
	inst, err := startInstance(spec, h.log.With("plugin", name))
	if err != nil {
		return nil, err
	}
	h.running[name] = inst
	return inst, nil
}

// PluginName returns NAME of a plugin:NAME/KEY key URI.
func PluginName(uri string) (string, error) { return pluginkeys.PluginName(uri) }

// KeyStore starts plugin name if needed and returns its key store, with
// exactly the optional abilities the plugin implements. Closing it does not
// stop the plugin: the Host does that.
func (h *Host) KeyStore(ctx context.Context, name string) (keystore.KeyStore, error) {
	inst, err := h.instanceFor(name)
	if err != nil {
		return nil, err
	}
	raw, err := inst.dispense(wire.KeyStoreName)
	if err != nil {
		return nil, err
	}
	return raw.(keystore.KeyStore), nil
}

// ParamSource returns plugin name's parameter source. The plugin starts on
// the first call, and again on a later call if it has stopped since.
func (h *Host) ParamSource(name string) (paramsource.ParamSource, error) {
	if _, err := h.plugins.Spec(name); err != nil {
		return nil, err
	}
	return lazyParamSource{h: h, name: name}, nil
}

// Hooks returns the plugins the config marks with hook: true, in config
// order, ready for engine.Options.Hooks. Each starts on its first event;
// its errors name it.
func (h *Host) Hooks() []hook.Hook {
	var out []hook.Hook
	for _, name := range h.plugins.Hooks() {
		out = append(out, lazyHook{h: h, name: name})
	}
	return out
}

type lazyParamSource struct {
	h    *Host
	name string
}

func (l lazyParamSource) Params(ctx context.Context, req *paramsource.ParamsRequest) (*paramsource.ParamsResponse, error) {
	inst, err := l.h.instanceFor(l.name)
	if err != nil {
		return nil, err
	}
	raw, err := inst.dispense(wire.ParamSourceName)
	if err != nil {
		return nil, err
	}
	return raw.(paramsource.ParamSource).Params(ctx, req)
}

type lazyHook struct {
	h    *Host
	name string
}

// Name names the plugin in the engine's errors ("enter vetoed by plugin
// audit: ...").
func (l lazyHook) Name() string { return "plugin " + l.name }

func (l lazyHook) Notify(ctx context.Context, req *hook.NotifyRequest) (*hook.NotifyResponse, error) {
	inst, err := l.h.instanceFor(l.name)
	if err != nil {
		return nil, err
	}
	raw, err := inst.dispense(wire.HookName)
	if err != nil {
		return nil, err
	}
	return raw.(hook.Hook).Notify(ctx, req)
}

var (
	_ paramsource.ParamSource = lazyParamSource{}
	_ hook.Hook               = lazyHook{}
)
