package config

import (
	"encoding/hex"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Plugin is one entry of the plugins section: a go-plugin binary that
// serves a key store, a parameter source or a hook.
type Plugin struct {
	// Name is how the rest of the config refers to the plugin
	// (plugin:NAME/... key URIs, parameter sources, hooks).
	Name string
	// Path is the binary: path as written, or PluginDir/Name.
	Path string
	// SHA256, when set, is the binary's checksum, verified before it runs.
	SHA256 []byte
	// Env is added to the plugin's environment (over fleetprov's own).
	Env map[string]string
	// Hook: the plugin receives every engine event and may veto a step.
	Hook bool
	// StartTimeout bounds launch and handshake; CallTimeout bounds each
	// call.
	StartTimeout time.Duration
	CallTimeout  time.Duration
}

// Plugin defaults.
const (
	DefaultPluginDir          = "/usr/lib/fleetprov/plugins"
	DefaultPluginStartTimeout = 30 * time.Second
	DefaultPluginCallTimeout  = 30 * time.Second
)

// fileOnlyKeys are fleet_provisioning keys read from the file only: their
// values are lists or mappings no environment variable or flag can carry.
var fileOnlyKeys = []string{"plugins"}

var pluginNameRE = regexp.MustCompile(`^[a-z0-9-]+$`)

var pluginItemKeys = []string{"name", "path", "sha256", "env", "hook", "startTimeout", "callTimeout"}

// plugins reads the plugins section: a list of mappings.
func (l *loader) plugins(key, dir string) []Plugin {
	var items []any
	switch v := l.k.Get(key).(type) {
	case nil:
		return nil
	case []any:
		items = v
	default:
		l.fail(key, "is not a list: list plugins, each a mapping with name and optionally path, sha256, env, hook, startTimeout and callTimeout")
		return nil
	}
	var out []Plugin
	seen := map[string]int{}
	for i, item := range items {
		n := i + 1
		m, ok := item.(map[string]any)
		if !ok {
			l.fail(key, "item %d is not a mapping: write it as name: NAME with optional path, sha256, env, hook, startTimeout and callTimeout", n)
			return nil
		}
		for _, k := range sortedKeys(m) {
			if !contains(pluginItemKeys, k) {
				l.fail(key, "item %d has unknown key %q: use %s", n, k, strings.Join(pluginItemKeys, ", "))
				return nil
			}
		}
		p := Plugin{StartTimeout: DefaultPluginStartTimeout, CallTimeout: DefaultPluginCallTimeout}
		name, _ := m["name"].(string)
		if name == "" {
			l.fail(key, "item %d has no name: set name to lowercase letters, digits and '-'", n)
			return nil
		}
		if !pluginNameRE.MatchString(name) {
			l.fail(key, "item %d: name %q is not a plugin name: use only lowercase letters, digits and '-'", n, name)
			return nil
		}
		if first, dup := seen[name]; dup {
			l.fail(key, "item %d: name %q is already used by item %d: give each plugin its own name", n, name, first)
			return nil
		}
		seen[name] = n
		p.Name = name
		at := fmt.Sprintf("item %d (%s):", n, name)

		switch v := m["path"].(type) {
		case nil:
			p.Path = filepath.Join(dir, name)
		case string:
			if strings.TrimSpace(v) == "" {
				p.Path = filepath.Join(dir, name)
			} else if filepath.IsAbs(v) {
				p.Path = filepath.Clean(v)
			} else {
				p.Path = filepath.Join(l.dir, v)
			}
		default:
			l.fail(key, "%s path is not a string: write the plugin binary's path, or leave it out to use %s", at, filepath.Join(dir, name))
			return nil
		}

		if v, ok := m["sha256"]; ok && v != nil {
			s, _ := v.(string)
			sum, err := hex.DecodeString(strings.TrimSpace(s))
			if err != nil || len(sum) != 32 {
				l.fail(key, "%s sha256 %q is not 64 hex digits: write what sha256sum prints for the plugin binary", at, fmt.Sprint(v))
				return nil
			}
			p.SHA256 = sum
		}

		switch v := m["env"].(type) {
		case nil:
		case map[string]any:
			p.Env = map[string]string{}
			for _, k := range sortedKeys(v) {
				switch ev := v[k].(type) {
				case string:
					p.Env[k] = ev
				case int, int64, float64, bool:
					p.Env[k] = fmt.Sprint(ev)
				default:
					l.fail(key, "%s env %s is not a single value: write NAME: value", at, k)
					return nil
				}
				if k == "" || strings.ContainsAny(k, "=\x00") {
					l.fail(key, "%s env name %q is not a variable name: use letters, digits and '_'", at, k)
					return nil
				}
			}
		default:
			l.fail(key, "%s env is not a mapping: write it as NAME: value pairs", at)
			return nil
		}

		switch v := m["hook"]; {
		case v == nil:
		case fmt.Sprint(v) == "true":
			p.Hook = true
		case fmt.Sprint(v) == "false":
		default:
			l.fail(key, "%s hook %q is not true or false", at, fmt.Sprint(v))
			return nil
		}

		for _, d := range []struct {
			name string
			dst  *time.Duration
		}{{"startTimeout", &p.StartTimeout}, {"callTimeout", &p.CallTimeout}} {
			v, ok := m[d.name]
			if !ok || v == nil {
				continue
			}
			s, _ := v.(string)
			t, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil || t <= 0 {
				l.fail(key, "%s %s %q is not a duration longer than zero: write it like 30s, 5m or 1h", at, d.name, fmt.Sprint(v))
				return nil
			}
			*d.dst = t
		}
		out = append(out, p)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
