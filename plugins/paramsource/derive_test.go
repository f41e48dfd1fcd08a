package paramsource

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"
)

// eeprom stands in for a plugin's ParamSource: it answers from a table and
// records what it was asked.
type eeprom struct {
	answer map[string]string
	err    error
	asked  []ParamsRequest
}

func (e *eeprom) Params(_ context.Context, req *ParamsRequest) (*ParamsResponse, error) {
	e.asked = append(e.asked, ParamsRequest{TemplateName: req.TemplateName, Params: maps.Clone(req.Params)})
	req.Params["Tampered"] = "yes" // a careless source must not reach the result
	if e.err != nil {
		return nil, e.err
	}
	return &ParamsResponse{Params: e.answer}, nil
}

func lookup(plugins map[string]ParamSource) PluginLookup {
	return func(name string) (ParamSource, error) {
		if p, ok := plugins[name]; ok {
			return p, nil
		}
		return NoPlugins(name)
	}
}

func mustSpec(t *testing.T, param string, value map[string]any) Spec {
	t.Helper()
	s, err := ParseSpec(param, value)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDeriveMergesInOrder(t *testing.T) {
	board := &eeprom{answer: map[string]string{"BoardSerial": "EE-99", "Revision": "C"}}
	h := fakeHost(t, nil, map[string]string{"SITE": "plant-7"})
	d, err := Derive(context.Background(), &DeriveRequest{
		TemplateName: "Fleet",
		Literal:      map[string]string{"Model": "X200", "Revision": "A"},
		Specs: []Spec{
			mustSpec(t, "Site", map[string]any{"source": "env", "variable": "SITE"}),
			mustSpec(t, "BoardSerial", map[string]any{"source": "plugin:board"}),
		},
		Host:    h,
		Plugins: lookup(map[string]ParamSource{"board": board}),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"Model": "X200", "Revision": "C", "BoardSerial": "EE-99", "Site": "plant-7"}
	if !reflect.DeepEqual(d.Params, want) {
		t.Errorf("params %v, want %v", d.Params, want)
	}
	wantFrom := map[string]string{"BoardSerial": "plugin:board", "Revision": "plugin:board", "Site": "env variable=SITE"}
	if !reflect.DeepEqual(d.From, wantFrom) {
		t.Errorf("from %v, want %v", d.From, wantFrom)
	}
	// BoardSerial sorts before Site: the plugin saw only the literals, with
	// the template's name.
	if len(board.asked) != 1 || board.asked[0].TemplateName != "Fleet" || !reflect.DeepEqual(board.asked[0].Params, map[string]string{"Model": "X200", "Revision": "A"}) {
		t.Errorf("plugin was asked %+v", board.asked)
	}
}

func TestDeriveLaterSourcesSeeEarlierOnes(t *testing.T) {
	later := &eeprom{answer: map[string]string{"Zone": "z"}}
	h := fakeHost(t, nil, map[string]string{"SERIAL": "SN-1"})
	_, err := Derive(context.Background(), &DeriveRequest{
		Specs: []Spec{
			mustSpec(t, "Zone", map[string]any{"source": "plugin:zone"}),
			mustSpec(t, "Serial", map[string]any{"source": "env", "variable": "SERIAL"}),
		},
		Host: h, Plugins: lookup(map[string]ParamSource{"zone": later}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(later.asked) != 1 || !reflect.DeepEqual(later.asked[0].Params, map[string]string{"Serial": "SN-1"}) {
		t.Errorf("plugin was asked %+v, want the env source's value", later.asked)
	}
}

func TestDeriveErrors(t *testing.T) {
	errEEPROM := errors.New("i2c bus 1: no answer at 0x50")
	cases := []struct {
		name   string
		plugin ParamSource
		want   string
	}{
		{"unknown plugin", nil, `templateParams.Serial (source plugin:board): no plugin named "board" is configured`},
		{"plugin fails", &eeprom{err: errEEPROM}, "templateParams.Serial (source plugin:board): i2c bus 1: no answer at 0x50"},
		{"plugin gives another parameter only", &eeprom{answer: map[string]string{"Other": "x"}}, "templateParams.Serial (source plugin:board): the source gave no value for Serial"},
		{"plugin gives nothing", &eeprom{}, "templateParams.Serial (source plugin:board): the source gave no value for Serial"},
		{"plugin gives an empty value", &eeprom{answer: map[string]string{"Serial": " "}}, "templateParams.Serial (source plugin:board): the derived value of Serial is empty"},
		{"plugin gives an empty extra", &eeprom{answer: map[string]string{"Serial": "S", "Rev": ""}}, "templateParams.Serial (source plugin:board): the derived value of Rev is empty"},
		{"plugin gives a value AWS refuses", &eeprom{answer: map[string]string{"Serial": strings.Repeat("é", 4097)}}, "templateParams.Serial (source plugin:board): the derived value of Serial is 4097 characters long; AWS IoT accepts values of at most 4096: make the source give a shorter one"},
		{"plugin gives a name AWS refuses", &eeprom{answer: map[string]string{"Serial": "S", strings.Repeat("N", 2049): "x"}}, "templateParams.Serial (source plugin:board): the source gave a parameter name 2049 characters long; AWS IoT accepts names of at most 2048"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plugins := map[string]ParamSource{}
			if c.plugin != nil {
				plugins["board"] = c.plugin
			}
			d, err := Derive(context.Background(), &DeriveRequest{
				Literal: map[string]string{"Model": "X200"},
				Specs:   []Spec{mustSpec(t, "Serial", map[string]any{"source": "plugin:board"})},
				Plugins: lookup(plugins),
			})
			if err == nil || err.Error() != c.want {
				t.Errorf("got %+v, %v\nwant error %s", d, err, c.want)
			}
		})
	}
	// The cause stays reachable: a plugin's transient failure is retried.
	_, err := Derive(context.Background(), &DeriveRequest{
		Specs:   []Spec{mustSpec(t, "Serial", map[string]any{"source": "plugin:board"})},
		Plugins: lookup(map[string]ParamSource{"board": &eeprom{err: errEEPROM}}),
	})
	if !errors.Is(err, errEEPROM) {
		t.Errorf("Derive lost the source's error: %v", err)
	}
}

func TestDeriveLiteralOnly(t *testing.T) {
	d, err := Derive(context.Background(), &DeriveRequest{Literal: map[string]string{"SerialNumber": "a2_b9"}})
	if err != nil || !reflect.DeepEqual(d.Params, map[string]string{"SerialNumber": "a2_b9"}) || len(d.From) != 0 {
		t.Errorf("got %+v, %v", d, err)
	}
}
