package config

import (
	"encoding/hex"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/failure"
)

func TestPlugins(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	c, _ := load(t, map[string]string{
		"pluginDir": `"/opt/vendor/plugins"`,
		"plugins":   `[{name: se050}, {name: eeprom, path: bin/eeprom, sha256: "` + sum + `", env: {BUS: 1, MODE: fast}, hook: true, startTimeout: 5s, callTimeout: 2m}]`,
	}, nil)
	raw, _ := hex.DecodeString(sum)
	want := []Plugin{
		{Name: "se050", Path: "/opt/vendor/plugins/se050", StartTimeout: DefaultPluginStartTimeout, CallTimeout: DefaultPluginCallTimeout},
		{Name: "eeprom", Path: filepath.Join(filepath.Dir(c.File), "bin/eeprom"), SHA256: raw, Env: map[string]string{"BUS": "1", "MODE": "fast"},
			Hook: true, StartTimeout: 5 * time.Second, CallTimeout: 2 * time.Minute},
	}
	if !reflect.DeepEqual(c.Plugins, want) {
		t.Errorf("Plugins = %+v\nwant %+v", c.Plugins, want)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings: %v", c.Warnings)
	}

	c, _ = load(t, map[string]string{"plugins": `[{name: a}]`}, []string{"FLEETPROV_PLUGIN_DIR=/env/plugins"})
	if c.Plugins[0].Path != "/env/plugins/a" {
		t.Errorf("path from FLEETPROV_PLUGIN_DIR: %s", c.Plugins[0].Path)
	}
}

func TestPluginsErrors(t *testing.T) {
	key := "services.aws.greengrass.fleet_provisioning.configuration.plugins"
	for _, tc := range []struct{ value, want string }{
		{`{name: a}`, "is not a list: list plugins, each a mapping with name and optionally path, sha256, env, hook, startTimeout and callTimeout"},
		{`[a]`, "item 1 is not a mapping: write it as name: NAME with optional path, sha256, env, hook, startTimeout and callTimeout"},
		{`[{path: /x}]`, "item 1 has no name: set name to lowercase letters, digits and '-'"},
		{`[{name: Se_050}]`, `item 1: name "Se_050" is not a plugin name: use only lowercase letters, digits and '-'`},
		{`[{name: a}, {name: a}]`, `item 2: name "a" is already used by item 1: give each plugin its own name`},
		{`[{name: a, pth: /x}]`, `item 1 has unknown key "pth": use name, path, sha256, env, hook, startTimeout, callTimeout`},
		{`[{name: a, sha256: abc}]`, `item 1 (a): sha256 "abc" is not 64 hex digits: write what sha256sum prints for the plugin binary`},
		{`[{name: a, env: [X]}]`, "item 1 (a): env is not a mapping: write it as NAME: value pairs"},
		{`[{name: a, env: {X: [1]}}]`, "item 1 (a): env X is not a single value: write NAME: value"},
		{`[{name: a, hook: maybe}]`, `item 1 (a): hook "maybe" is not true or false`},
		{`[{name: a, callTimeout: 30}]`, `item 1 (a): callTimeout "30" is not a duration longer than zero: write it like 30s, 5m or 1h`},
		{`[{name: a, startTimeout: 0s}]`, `item 1 (a): startTimeout "0s" is not a duration longer than zero: write it like 30s, 5m or 1h`},
		{`[{name: a, path: [x]}]`, "item 1 (a): path is not a string: write the plugin binary's path, or leave it out to use /usr/lib/fleetprov/plugins/a"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			dir := t.TempDir()
			p := newPKI(t, dir)
			keys := goodKeys(p)
			keys["plugins"] = tc.value
			path := writeFile(t, filepath.Join(dir, "config.yaml"), fp(filepath.Join(dir, "gg"), keys))
			_, err := Load(LoadOptions{Path: path})
			want := "config " + path + ": " + key + " " + tc.want
			if err == nil || err.Error() != want {
				t.Fatalf("error:\n %v\nwant\n %s", err, want)
			}
			if !failure.IsUsage(err) {
				t.Error("not a usage error")
			}
		})
	}
}
