// Package pluginkeys is what the two plugin hosts share: the in-process
// one (plugins/host) and fleetprov's client of the plugin host process
// (plugins/remote). It owns the "plugin" key URI scheme, so that a
// program linking both still registers it once, and resolves plugin:
// URIs against whichever host was opened last.
package pluginkeys

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// Scheme is the key URI scheme of key stores served by plugins:
// plugin:NAME/KEY, where NAME is a plugin in the config and KEY is the
// plugin's own name for the key. The plugin receives the whole URI.
const Scheme = "plugin"

// ErrClosed is returned by lookups after a host is closed.
var ErrClosed = errors.New("plugins are already stopped")

// Host is what plugin: key URIs resolve against.
type Host interface {
	KeyStore(ctx context.Context, name string) (keystore.KeyStore, error)
}

var (
	mu     sync.Mutex
	active Host
)

func init() { keystore.Register(Scheme, open) }

// Activate makes h the host that plugin: key URIs resolve against: the
// most recent one not yet closed. A command has one.
func Activate(h Host) {
	mu.Lock()
	active = h
	mu.Unlock()
}

// Deactivate forgets h if it is still the active host.
func Deactivate(h Host) {
	mu.Lock()
	if active == h {
		active = nil
	}
	mu.Unlock()
}

var pluginNameRE = regexp.MustCompile(`^[a-z0-9-]+$`)

// PluginName returns NAME of a plugin:NAME/KEY key URI.
func PluginName(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != Scheme {
		return "", failure.Usage(fmt.Sprintf("key URI %q is not a plugin key URI: write it as plugin:NAME/KEY", uri))
	}
	name, key, ok := strings.Cut(u.Opaque, "/")
	if !ok || !pluginNameRE.MatchString(name) || key == "" {
		return "", failure.Usage(fmt.Sprintf("key URI %q is not a plugin key URI: write it as plugin:NAME/KEY, NAME a plugin of the plugins section", uri))
	}
	return name, nil
}

// Unknown is the error for a plugin name the config does not list;
// configured are the names it does.
func Unknown(name string, configured []string) error {
	known := "none is configured"
	if len(configured) > 0 {
		names := append([]string(nil), configured...)
		sort.Strings(names)
		known = "configured: " + strings.Join(names, ", ")
	}
	return failure.Usage(fmt.Sprintf("plugin %q is not in the plugins section of the fleet_provisioning configuration (%s): add it there or fix the name", name, known))
}

func open(u *url.URL) (keystore.KeyStore, error) {
	name, err := PluginName(u.String())
	if err != nil {
		return nil, err
	}
	mu.Lock()
	h := active
	mu.Unlock()
	if h == nil {
		return nil, failure.Usage(fmt.Sprintf("key URI %q names plugin %q, but no plugins are loaded: add it to the plugins section of the fleet_provisioning configuration", u.String(), name))
	}
	return h.KeyStore(context.Background(), name)
}

// Plugins is the plugins section of a config, by name, as both hosts
// look plugins up in it.
type Plugins struct {
	specs map[string]config.Plugin
	names []string // in config order
}

// Index returns the plugins of list.
func Index(list []config.Plugin) Plugins {
	p := Plugins{specs: make(map[string]config.Plugin, len(list))}
	for _, s := range list {
		p.specs[s.Name] = s
		p.names = append(p.names, s.Name)
	}
	return p
}

// Spec returns plugin name, or the usage error that names the plugins
// configured.
func (p Plugins) Spec(name string) (config.Plugin, error) {
	s, ok := p.specs[name]
	if !ok {
		return config.Plugin{}, Unknown(name, p.names)
	}
	return s, nil
}

// Hooks returns the names of the plugins marked with hook: true, in
// config order: the order the engine asks them in.
func (p Plugins) Hooks() []string {
	var out []string
	for _, name := range p.names {
		if p.specs[name].Hook {
			out = append(out, name)
		}
	}
	return out
}
