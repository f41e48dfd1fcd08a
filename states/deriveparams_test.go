package states

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
)

const serialLine = `        SerialNumber: "a2_b9_d2_5a_fd_f9" #[Modify here]`

// serialFromFile makes the device's SerialNumber come from a file holding
// value, and returns the file's path.
func serialFromFile(t *testing.T, value string) (*device, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "serial")
	if err := os.WriteFile(path, []byte(value+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := newDevice(t, replaceLine(t, serialLine,
		"        SerialNumber: {source: file, path: "+path+"}\n        Model: X200"))
	return d, path
}

// The parameters RegisterThing sends are the ones DeriveParams journaled,
// even when the source answers differently by the time they are sent.
func TestRegisterThingSendsDerivedParams(t *testing.T) {
	d, serial := serialFromFile(t, "5e_c5_2a_dd_23_a3")
	d.startCloud(t)
	s := session(t)
	r := d.run(true)
	if err := (&DeriveParams{}).Run(context.Background(), r); err != nil {
		t.Fatalf("DeriveParams: %v", err)
	}
	want := map[string]string{"SerialNumber": "5e_c5_2a_dd_23_a3", "Model": "X200"}
	if !reflect.DeepEqual(r.Data.TemplateParams, want) {
		t.Fatalf("Data.TemplateParams = %v, want %v", r.Data.TemplateParams, want)
	}
	if got := r.Data.ParamSources; !reflect.DeepEqual(got, map[string]string{"SerialNumber": "file path=" + serial}) {
		t.Errorf("Data.ParamSources = %v", got)
	}

	if err := os.WriteFile(serial, []byte("ff_ff_ff_ff_ff_ff\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := (&PrepareKey{}).Run(context.Background(), r); err != nil {
		t.Fatalf("PrepareKey: %v", err)
	}
	if err := (&CreateCertificate{Session: s}).Run(context.Background(), r); err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	if err := (&RegisterThing{Session: s}).Run(context.Background(), r); err != nil {
		t.Fatalf("RegisterThing: %v", err)
	}
	if r.Data.ThingName != "gg_5e_c5_2a_dd_23_a3" {
		t.Errorf("thing %q, want it named from the derived serial", r.Data.ThingName)
	}
	reg, err := cloudsim.ReadRegistry(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, th := range reg.SortedThings() {
		names = append(names, th.Name)
	}
	if len(names) != 1 || names[0] != "gg_5e_c5_2a_dd_23_a3" {
		t.Errorf("the cloud holds things %v, want only gg_5e_c5_2a_dd_23_a3", names)
	}
}

func TestDeriveParamsFails(t *testing.T) {
	d, serial := serialFromFile(t, "x")
	if err := os.Remove(serial); err != nil {
		t.Fatal(err)
	}
	r := d.run(true)
	err := (&DeriveParams{}).Run(context.Background(), r)
	want := "templateParams.SerialNumber (source file): " + serial + " does not exist"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	if failure.IsTransient(err) || failure.IsUsage(err) {
		t.Errorf("a missing file is neither retried nor a usage error: %v", err)
	}
	if r.Data.TemplateParams != nil {
		t.Errorf("a failed derivation left parameters: %v", r.Data.TemplateParams)
	}
}

// A journal written before parameters were journaled holds none: the
// config's plain values are what that run would have sent; if the config
// now names sources, nobody derived them for this identity.
func TestJournaledParamsFromAnOlderJournal(t *testing.T) {
	d := newDevice(t, nil)
	r := d.run(false)
	got, err := journaledParams(r)
	if err != nil || !reflect.DeepEqual(got, map[string]string{"SerialNumber": "a2_b9_d2_5a_fd_f9"}) {
		t.Errorf("plain config: %v, %v", got, err)
	}

	d, _ = serialFromFile(t, "x")
	r = d.run(false)
	_, err = journaledParams(r)
	want := "the journal holds no template parameters, but templateParams names 1 source(s) (the config changed during provisioning): run `fleetprov run --force` to provision afresh"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}

	r.Data.TemplateParams = map[string]string{"SerialNumber": "journaled"}
	if got, err := journaledParams(r); err != nil || got["SerialNumber"] != "journaled" {
		t.Errorf("journaled: %v, %v", got, err)
	}
}

// An unknown plugin is a config error, found by LoadConfig before the
// journal exists.
func TestLoadConfigUnknownPlugin(t *testing.T) {
	d := newDevice(t, replaceLine(t, serialLine, "        SerialNumber: {source: 'plugin:eeprom'}"))
	r := &engine.Run{Log: d.run(true).Log}
	err := (&LoadConfig{Options: config.LoadOptions{Path: d.configPath}}).Run(context.Background(), r)
	want := "config " + d.configPath + `: services.aws.greengrass.fleet_provisioning.configuration.templateParams.SerialNumber: source plugin:eeprom: no plugin named "eeprom" is configured`
	if err == nil || err.Error() != want || !failure.IsUsage(err) {
		t.Fatalf("got %v\nwant usage error %s", err, want)
	}
}
