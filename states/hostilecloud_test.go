package states

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/failure"
)

// A template whose deviceConfiguration breaks the device's bounds makes
// the local cloud answer RegisterThing with it; the state refuses the
// answer, fatally, and keeps none of it for the journal.
func TestRegisterThingRefusesUnboundedDeviceConfiguration(t *testing.T) {
	tests := []struct {
		name string
		conf map[string]any
		want string
	}{
		{"65 keys", manyKeys(65), "deviceConfiguration has 65 keys, over the limit of 64"},
		{"value of 5000 bytes", map[string]any{"FallbackUrl": strings.Repeat("u", 5000)},
			`deviceConfiguration value of "FallbackUrl" is 5000 bytes, over the 4096-byte limit`},
		{"newline in a key", map[string]any{"Fallback\nUrl": "x"}, `deviceConfiguration key "Fallback\nUrl" holds a control character`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDevice(t, nil)
			setDeviceConfiguration(t, d, tt.conf)
			d.startCloud(t)
			s := session(t)
			r := certifiedRun(t, d, s)
			before := *r.Data

			err := (&RegisterThing{Session: s}).Run(context.Background(), r)
			want := "iotclient: RegisterThing: refused answer on $aws/provisioning-templates/" + cloudsim.DefaultTemplateName +
				"/provision/json/accepted: " + tt.want
			if err == nil || err.Error() != want {
				t.Fatalf("error:\n got %v\nwant %s", err, want)
			}
			if failure.IsTransient(err) {
				t.Error("a refused answer must be fatal")
			}
			if r.Data.ThingName != "" || r.Data.DeviceConfiguration != nil || r.Data.TemplateName != before.TemplateName {
				t.Errorf("the refused answer reached the run's data: thing %q, device configuration %d keys", r.Data.ThingName, len(r.Data.DeviceConfiguration))
			}
		})
	}
}

func manyKeys(n int) map[string]any {
	m := map[string]any{}
	for i := range n {
		m[fmt.Sprintf("Key%d", i)] = "v"
	}
	return m
}

// setDeviceConfiguration adds a DeviceConfiguration section to the
// emulator's default template.
func setDeviceConfiguration(t *testing.T, d *device, conf map[string]any) {
	t.Helper()
	path := filepath.Join(d.dir, "templates", cloudsim.DefaultTemplateName+".json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tmpl map[string]any
	if err := json.Unmarshal(b, &tmpl); err != nil {
		t.Fatal(err)
	}
	tmpl["DeviceConfiguration"] = conf
	if b, err = json.Marshal(tmpl); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
