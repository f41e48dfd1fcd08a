package paramsource

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// PluginPrefix starts a source name that a go-plugin plugin provides:
// "plugin:eeprom" is the ParamSource of the plugin named eeprom.
const PluginPrefix = "plugin:"

// OptionSource is the key of a templateParams value that names its source:
// SerialNumber: {source: mac, interface: eth0}.
const OptionSource = "source"

// Host is the part of the device the built-in sources read. The zero Host
// is the real device; tests point it elsewhere.
type Host struct {
	// Root prefixes the fixed paths the built-ins read (/etc/machine-id,
	// /sys/class/dmi/id/...). Empty means /.
	Root string
	// Interfaces lists the network interfaces; nil means net.Interfaces.
	Interfaces func() ([]net.Interface, error)
	// LookupEnv reads the environment; nil means os.LookupEnv.
	LookupEnv func(name string) (string, bool)
}

func (h *Host) path(p string) string {
	if h == nil || h.Root == "" {
		return p
	}
	return h.Root + p
}

func (h *Host) interfaces() ([]net.Interface, error) {
	if h == nil || h.Interfaces == nil {
		return net.Interfaces()
	}
	return h.Interfaces()
}

func (h *Host) lookupEnv(name string) (string, bool) {
	if h == nil || h.LookupEnv == nil {
		return os.LookupEnv(name)
	}
	return h.LookupEnv(name)
}

// OpenRequest is what a source is made from: one templateParams value.
type OpenRequest struct {
	// Param is the template parameter the source fills.
	Param string
	// Options are the value's keys other than source, each a string or a
	// []string (a list in config). Only the names the source's Factory
	// lists reach it.
	Options map[string]any
	// Host is the device the source reads when asked; nil is the real one.
	Host *Host
}

// Option returns option name as a single string: "" when absent, an error
// when it is a list.
func (r *OpenRequest) Option(name string) (string, error) {
	switch v := r.Options[name].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	}
	return "", fmt.Errorf("option %s is a list: write a single value", name)
}

// DurationOption returns option name as a positive duration, def when absent.
func (r *OpenRequest) DurationOption(name string, def time.Duration) (time.Duration, error) {
	s, err := r.Option(name)
	if err != nil || strings.TrimSpace(s) == "" {
		return def, err
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d <= 0 {
		return def, fmt.Errorf("option %s %q is not a positive duration: write it like 5s or 1m", name, s)
	}
	return d, nil
}

// Opener makes a source from its options. It checks them and must not
// touch the device: config check and every run call it before anything
// is read, and the source reads the device only when asked for Params.
type Opener func(req *OpenRequest) (ParamSource, error)

// Factory is a kind of source as registered by name.
type Factory struct {
	// Options lists the option names the source takes; any other option
	// under a value naming this source is a config error.
	Options []string
	Open    Opener
}

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
)

// Register makes a source available under name, which config values name
// with source: NAME. Built-ins register from init; a vendor build
// registers its own the same way. Registering a name twice, or a name
// starting with plugin:, is a programming error.
func Register(name string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := factories[name]; dup {
		panic("paramsource: source registered twice: " + name)
	}
	if name == "" || strings.HasPrefix(name, PluginPrefix) || f.Open == nil || slices.Contains(f.Options, OptionSource) {
		panic("paramsource: bad registration: " + name)
	}
	factories[name] = f
}

// Sources lists the source names a config may use, sorted, ending with
// plugin:NAME.
func Sources() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(factories)+1)
	for s := range factories {
		out = append(out, s)
	}
	sort.Strings(out)
	return append(out, PluginPrefix+"NAME")
}

func factory(name string) (Factory, bool) {
	mu.RLock()
	defer mu.RUnlock()
	f, ok := factories[name]
	return f, ok
}

// PluginLookup finds the ParamSource that the plugin named name provides.
// It should not start the plugin: a plugin starts when first asked.
type PluginLookup func(name string) (ParamSource, error)

// NoPlugins is the PluginLookup of a program that loads no plugins.
func NoPlugins(name string) (ParamSource, error) {
	return nil, fmt.Errorf("no plugin named %q is configured", name)
}

// Spec is a templateParams value that names a source instead of holding a
// literal value.
type Spec struct {
	// Param is the template parameter the source fills.
	Param string
	// Source is a registered source's name or plugin:NAME.
	Source string
	// Options are the value's other keys, each a string or a []string.
	Options map[string]any
}

// ParseSpec reads the templateParams value of param written as a mapping
// ({source: mac, interface: eth0}) and checks it as far as can be done
// without the device: the source is known, its options are ones it takes,
// and their values are well formed. Errors do not name param: the caller
// says where the value came from.
func ParseSpec(param string, value map[string]any) (Spec, error) {
	known := strings.Join(Sources(), ", ")
	raw, ok := value[OptionSource]
	if !ok {
		return Spec{}, fmt.Errorf("no %s: add %s: NAME (known: %s), or write a plain value", OptionSource, OptionSource, known)
	}
	name, ok := scalar(raw)
	if !ok || strings.TrimSpace(name) == "" {
		return Spec{}, fmt.Errorf("%s is not a source name (known: %s)", OptionSource, known)
	}
	name = strings.TrimSpace(name)
	s := Spec{Param: param, Source: name, Options: map[string]any{}}
	for k, v := range value {
		if k == OptionSource {
			continue
		}
		o, err := option(k, v)
		if err != nil {
			return Spec{}, fmt.Errorf("source %s: %w", name, err)
		}
		s.Options[k] = o
	}

	if plugin, ok := strings.CutPrefix(name, PluginPrefix); ok {
		if plugin == "" {
			return Spec{}, fmt.Errorf("source %q names no plugin: write plugin:NAME with the plugin's name from plugins", name)
		}
		for k := range s.Options {
			return Spec{}, fmt.Errorf("source %s takes no options, but %q is set: remove it (the plugin's own settings go under plugins)", name, k)
		}
		return s, nil
	}
	f, ok := factory(name)
	if !ok {
		return Spec{}, fmt.Errorf("unknown source %q (known: %s)", name, known)
	}
	for _, k := range sortedKeys(s.Options) {
		if !slices.Contains(f.Options, k) {
			takes := "takes no options"
			if len(f.Options) > 0 {
				o := slices.Clone(f.Options)
				sort.Strings(o)
				takes = "takes " + strings.Join(o, ", ")
			}
			return Spec{}, fmt.Errorf("source %s has no option %q (it %s)", name, k, takes)
		}
	}
	if _, err := f.Open(&OpenRequest{Param: param, Options: s.Options}); err != nil {
		return Spec{}, fmt.Errorf("source %s: %w", name, err)
	}
	return s, nil
}

// Open makes the spec's source: a registered one reading host, or the
// plugin's, found through plugins (nil: NoPlugins).
func (s Spec) Open(host *Host, plugins PluginLookup) (ParamSource, error) {
	if plugin, ok := strings.CutPrefix(s.Source, PluginPrefix); ok {
		if plugins == nil {
			plugins = NoPlugins
		}
		return plugins(plugin)
	}
	f, ok := factory(s.Source)
	if !ok {
		return nil, fmt.Errorf("unknown source %q (known: %s)", s.Source, strings.Join(Sources(), ", "))
	}
	return f.Open(&OpenRequest{Param: s.Param, Options: s.Options, Host: host})
}

// String is the spec as a person reads it: "mac interface=eth0 format=underscore".
func (s Spec) String() string {
	parts := []string{s.Source}
	for _, k := range sortedKeys(s.Options) {
		switch v := s.Options[k].(type) {
		case []string:
			var b strings.Builder
			enc := json.NewEncoder(&b)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(v) // a []string always encodes
			parts = append(parts, k+"="+strings.TrimSpace(b.String()))
		default:
			parts = append(parts, fmt.Sprintf("%s=%v", k, v))
		}
	}
	return strings.Join(parts, " ")
}

// option turns a config value into a string or a []string.
func option(name string, v any) (any, error) {
	if s, ok := scalar(v); ok {
		return s, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("option %s is a mapping: write a value or a list", name)
	}
	out := make([]string, 0, len(list))
	for i, item := range list {
		s, ok := scalar(item)
		if !ok {
			return nil, fmt.Errorf("option %s: item %d is not a single value", name, i+1)
		}
		out = append(out, s)
	}
	return out, nil
}

// scalar is v as a string if it is one value: config files give strings,
// a JSON object (the -p flag) also numbers and booleans.
func scalar(v any) (string, bool) {
	switch v := v.(type) {
	case nil:
		return "", true
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool, int, int64, float64:
		return fmt.Sprint(v), true
	}
	return "", false
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
