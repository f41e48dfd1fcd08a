package paramsource

import (
	"context"
	"reflect"
	"strings"
	"testing"
)

func TestParseSpecErrors(t *testing.T) {
	known := "command, dmi, env, file, mac, machine-id, plugin:NAME"
	cases := []struct {
		name  string
		value map[string]any
		want  string
	}{
		{"no source", map[string]any{"interface": "eth0"},
			"no source: add source: NAME (known: " + known + "), or write a plain value"},
		{"source is a list", map[string]any{"source": []any{"mac"}},
			"source is not a source name (known: " + known + ")"},
		{"unknown source", map[string]any{"source": "macc"},
			`unknown source "macc" (known: ` + known + ")"},
		{"unknown option", map[string]any{"source": "mac", "iface": "eth0"},
			`source mac has no option "iface" (it takes format, interface)`},
		{"option on optionless source", map[string]any{"source": "machine-id", "path": "/x"},
			`source machine-id has no option "path" (it takes no options)`},
		{"option is a mapping", map[string]any{"source": "file", "path": map[string]any{"a": "b"}},
			"source file: option path is a mapping: write a value or a list"},
		{"bad MAC format", map[string]any{"source": "mac", "format": "dash"},
			`source mac: format "dash" is not a MAC format: use colon (aa:bb:..), underscore (aa_bb_..) or plain (aabb..)`},
		{"MAC interface as a list", map[string]any{"source": "mac", "interface": []any{"eth0", "eth1"}},
			"source mac: option interface is a list: write a single value"},
		{"bad DMI field", map[string]any{"source": "dmi", "field": "bios_version"},
			`source dmi: field "bios_version" is not a DMI field fleetprov reads: use product_serial, product_uuid, board_serial, chassis_serial`},
		{"env without variable", map[string]any{"source": "env"},
			"source env: variable is missing: set it to the environment variable's name"},
		{"file without path", map[string]any{"source": "file"},
			"source file: path is missing: set it to the file whose first line is the value"},
		{"file relative path", map[string]any{"source": "file", "path": "serial.txt"},
			`source file: path "serial.txt" is relative: write the file's absolute path`},
		{"command missing", map[string]any{"source": "command", "timeout": "1s"},
			"source command: command is missing: set it to the program and its arguments as a list, e.g. [/usr/bin/vendor-serial, --short]"},
		{"command with spaces", map[string]any{"source": "command", "command": "cat /etc/serial"},
			`source command: command "cat /etc/serial" has spaces, but no shell runs it: write it as a list, e.g. [cat, /etc/serial]`},
		{"bad timeout", map[string]any{"source": "command", "command": []any{"true"}, "timeout": "5"},
			`source command: option timeout "5" is not a positive duration: write it like 5s or 1m`},
		{"zero timeout", map[string]any{"source": "command", "command": []any{"true"}, "timeout": "0s"},
			`source command: option timeout "0s" is not a positive duration: write it like 5s or 1m`},
		{"plugin without name", map[string]any{"source": "plugin:"},
			`source "plugin:" names no plugin: write plugin:NAME with the plugin's name from plugins`},
		{"plugin with options", map[string]any{"source": "plugin:eeprom", "path": "/x"},
			`source plugin:eeprom takes no options, but "path" is set: remove it (the plugin's own settings go under plugins)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSpec("SerialNumber", tc.value)
			if err == nil || err.Error() != tc.want {
				t.Errorf("ParseSpec(%v):\n got %v\nwant %s", tc.value, err, tc.want)
			}
		})
	}
}

func TestParseSpec(t *testing.T) {
	s, err := ParseSpec("SerialNumber", map[string]any{"source": " mac ", "interface": "eth0", "format": "underscore"})
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{Param: "SerialNumber", Source: "mac", Options: map[string]any{"interface": "eth0", "format": "underscore"}}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %+v, want %+v", s, want)
	}
	if got := s.String(); got != "mac format=underscore interface=eth0" {
		t.Errorf("String() = %q", got)
	}
	s, err = ParseSpec("Serial", map[string]any{"source": "command", "command": []any{"/usr/bin/serial", "--short"}, "timeout": "2s"})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.String(); got != `command command=["/usr/bin/serial","--short"] timeout=2s` {
		t.Errorf("String() = %q", got)
	}
	if _, err := ParseSpec("Serial", map[string]any{"source": "plugin:eeprom"}); err != nil {
		t.Errorf("plugin source: %v", err)
	}
}

// A vendor build registers its own source by name; config values name it
// like a built-in, and its options are checked against what it declared.
func TestRegisterVendorSource(t *testing.T) {
	t.Cleanup(func() {
		mu.Lock()
		delete(factories, "test-eeprom")
		mu.Unlock()
	})
	Register("test-eeprom", Factory{Options: []string{"offset"}, Open: func(req *OpenRequest) (ParamSource, error) {
		off, err := req.Option("offset")
		if err != nil {
			return nil, err
		}
		return funcSource{param: req.Param, value: func(context.Context) (string, error) { return "EE-" + off, nil }}, nil
	}})
	if !strings.Contains(strings.Join(Sources(), ","), "test-eeprom") {
		t.Fatalf("Sources() = %v, misses the registered source", Sources())
	}
	if _, err := ParseSpec("Serial", map[string]any{"source": "test-eeprom", "size": "1"}); err == nil || err.Error() != `source test-eeprom has no option "size" (it takes offset)` {
		t.Errorf("unknown option: %v", err)
	}
	s, err := ParseSpec("Serial", map[string]any{"source": "test-eeprom", "offset": "16"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := Derive(context.Background(), &DeriveRequest{Specs: []Spec{s}})
	if err != nil {
		t.Fatal(err)
	}
	if d.Params["Serial"] != "EE-16" {
		t.Errorf("derived %v", d.Params)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering a name twice did not panic")
		}
	}()
	Register("mac", Factory{Open: openMAC})
}
