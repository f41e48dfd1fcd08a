package pluginkeys_test

import (
	"slices"
	"testing"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/internal/pluginkeys"
)

func TestPlugins(t *testing.T) {
	p := pluginkeys.Index([]config.Plugin{
		{Name: "zeta", Hook: true},
		{Name: "keys", Path: "/opt/keys"},
		{Name: "audit", Hook: true},
	})
	if s, err := p.Spec("keys"); err != nil || s.Path != "/opt/keys" {
		t.Errorf("Spec(keys) = %+v, %v", s, err)
	}
	_, err := p.Spec("nope")
	want := `plugin "nope" is not in the plugins section of the fleet_provisioning configuration (configured: audit, keys, zeta): add it there or fix the name`
	if err == nil || err.Error() != want || !failure.IsUsage(err) {
		t.Errorf("Spec(nope): %v\nwant usage error %s", err, want)
	}
	if got := p.Hooks(); !slices.Equal(got, []string{"zeta", "audit"}) {
		t.Errorf("Hooks() = %v, want zeta, audit in config order", got)
	}

	_, err = pluginkeys.Index(nil).Spec("nope")
	want = `plugin "nope" is not in the plugins section of the fleet_provisioning configuration (none is configured): add it there or fix the name`
	if err == nil || err.Error() != want {
		t.Errorf("Spec(nope) with no plugins: %v\nwant %s", err, want)
	}
}
