package states

import (
	"context"
	"maps"
	"slices"

	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// DeriveParams works out the template parameters: the literal values of
// templateParams and those its sources derive from the device (a MAC, the
// DMI serial, a file, a command, a plugin). It runs once per provisioning
// identity and before anything is asked of the cloud, so a broken source
// fails before a certificate exists. What it derives is journaled with the
// next state's entry; a resumed run sends exactly those values and never
// derives them again, even if a source would now answer differently.
type DeriveParams struct {
	// Plugins finds plugin:NAME sources; nil knows none.
	Plugins paramsource.PluginLookup
	// Host is the device the built-in sources read; nil is this one.
	Host *paramsource.Host
}

var _ engine.State = (*DeriveParams)(nil)

func (*DeriveParams) Name() string { return engine.DeriveParams }

func (s *DeriveParams) Run(ctx context.Context, r *engine.Run) error {
	cfg := r.Config
	d, err := paramsource.Derive(ctx, &paramsource.DeriveRequest{
		TemplateName: cfg.TemplateName,
		Literal:      cfg.TemplateParams,
		Specs:        cfg.ParamSources,
		Host:         s.Host,
		Plugins:      s.Plugins,
	})
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(d.From)) {
		r.Log.Info("template parameter derived", "param", name, "value", d.Params[name], "source", d.From[name])
	}
	r.Data.TemplateParams = d.Params
	r.Data.ParamSources = d.From
	return nil
}
