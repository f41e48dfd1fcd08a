package config

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// A value that names a source is parsed into ParamSources; plain values
// stay in TemplateParams as Greengrass lite has them.
func TestTemplateParamSources(t *testing.T) {
	c, _ := load(t, map[string]string{"templateParams": "\n" +
		"        SerialNumber: {source: mac, interface: eth0, format: underscore}\n" +
		"        Model: X200\n" +
		"        Boot:\n" +
		"          source: command\n" +
		"          command: [/usr/bin/vendor-serial, --short]\n" +
		"          timeout: 2s"}, nil)
	if want := map[string]string{"Model": "X200"}; !reflect.DeepEqual(c.TemplateParams, want) {
		t.Errorf("TemplateParams = %v, want %v", c.TemplateParams, want)
	}
	want := []paramsource.Spec{
		{Param: "Boot", Source: "command", Options: map[string]any{"command": []string{"/usr/bin/vendor-serial", "--short"}, "timeout": "2s"}},
		{Param: "SerialNumber", Source: "mac", Options: map[string]any{"interface": "eth0", "format": "underscore"}},
	}
	if !reflect.DeepEqual(c.ParamSources, want) {
		t.Errorf("ParamSources = %+v\nwant %+v", c.ParamSources, want)
	}

	// The -p flag's JSON may name sources too.
	c, _ = load(t, nil, nil, `-p{"SerialNumber": {"source": "env", "variable": "SERIAL"}, "N": 7}`)
	if !reflect.DeepEqual(c.TemplateParams, map[string]string{"N": "7"}) || len(c.ParamSources) != 1 || c.ParamSources[0].String() != "env variable=SERIAL" {
		t.Errorf("from -p: %v, %+v", c.TemplateParams, c.ParamSources)
	}
}

func TestTemplateParamSourceErrors(t *testing.T) {
	known := "(known: command, dmi, env, file, mac, machine-id, plugin:NAME)"
	fpk := "config {file}: services.aws.greengrass.fleet_provisioning.configuration."
	cases := []struct {
		name   string
		params string
		env    []string
		args   []string
		want   string
	}{
		{name: "unknown source", params: "{SerialNumber: {source: macc}}",
			want: fpk + `templateParams.SerialNumber: unknown source "macc" ` + known},
		{name: "unknown option", params: "{SerialNumber: {source: mac, iface: eth0}}",
			want: fpk + `templateParams.SerialNumber: source mac has no option "iface" (it takes format, interface)`},
		{name: "bad option value", params: "{SerialNumber: {source: mac, format: dash}}",
			want: fpk + `templateParams.SerialNumber: source mac: format "dash" is not a MAC format: use colon (aa:bb:..), underscore (aa_bb_..) or plain (aabb..)`},
		{name: "relative file", params: "{SerialNumber: {source: file, path: serial.txt}}",
			want: fpk + `templateParams.SerialNumber: source file: path "serial.txt" is relative: write the file's absolute path`},
		{name: "command as a shell line", params: "{SerialNumber: {source: command, command: cat /etc/serial}}",
			want: fpk + `templateParams.SerialNumber: source command: command "cat /etc/serial" has spaces, but no shell runs it: write it as a list, e.g. [cat, /etc/serial]`},
		{name: "parameter is a list", params: "{SerialNumber: [a, b]}",
			want: fpk + `templateParams parameter "SerialNumber" is a list: write a value, or a mapping naming its source such as {source: mac}`},
		{name: "flag names an unknown source", args: []string{`-p{"SerialNumber": {"source": "macc"}}`},
			want: `flag -p/--template-params parameter "SerialNumber": unknown source "macc" ` + known},
		{name: "env names an unknown option", env: []string{`FLEETPROV_TEMPLATE_PARAMS={"S": {"source": "env", "name": "X"}}`},
			want: `environment variable FLEETPROV_TEMPLATE_PARAMS parameter "S": source env has no option "name" (it takes variable)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := newPKI(t, dir)
			keys := goodKeys(p)
			if c.params != "" {
				keys["templateParams"] = c.params
			}
			path := writeFile(t, filepath.Join(dir, "config.yaml"), fp(filepath.Join(dir, "gg"), keys))
			opts := LoadOptions{Path: path, Environ: c.env}
			if c.args != nil {
				opts.Flags = parseFlags(t, c.args...)
			}
			_, err := Load(opts)
			want := strings.ReplaceAll(c.want, "{file}", path)
			if err == nil || err.Error() != want {
				t.Fatalf("error\n got: %v\nwant: %s", err, want)
			}
			if !failure.IsUsage(err) {
				t.Errorf("%v is not a usage error", err)
			}
		})
	}
}

type constSource string

func (c constSource) Params(context.Context, *paramsource.ParamsRequest) (*paramsource.ParamsResponse, error) {
	return &paramsource.ParamsResponse{Params: map[string]string{"SerialNumber": string(c)}}, nil
}

func TestCheckParamPlugins(t *testing.T) {
	c, _ := load(t, map[string]string{"templateParams": "{SerialNumber: {source: 'plugin:eeprom'}, Model: {source: machine-id}}"}, nil)
	if err := c.CheckParamPlugins(func(name string) (paramsource.ParamSource, error) {
		if name == "eeprom" {
			return constSource("EE-1"), nil
		}
		return paramsource.NoPlugins(name)
	}); err != nil {
		t.Errorf("a known plugin: %v", err)
	}
	err := c.CheckParamPlugins(paramsource.NoPlugins)
	want := "config " + c.File + `: services.aws.greengrass.fleet_provisioning.configuration.templateParams.SerialNumber: source plugin:eeprom: no plugin named "eeprom" is configured`
	if err == nil || err.Error() != want || !failure.IsUsage(err) {
		t.Errorf("unknown plugin:\n got %v\nwant %s", err, want)
	}
}
