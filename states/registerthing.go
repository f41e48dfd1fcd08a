package states

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/internal/iotclient"
)

// RegisterThing presents the ownership token and the template parameters
// to the provisioning template; the cloud creates the thing and activates
// the certificate.
type RegisterThing struct{ Session *Session }

var _ engine.State = (*RegisterThing)(nil)

func (s *RegisterThing) Run(ctx context.Context, r *engine.Run) error {
	if r.Data.OwnershipToken == "" {
		return fmt.Errorf("%w: none in the journal", engine.ErrTokenUnusable)
	}
	params, err := journaledParams(r)
	if err != nil {
		return err
	}
	c, err := s.Session.get(ctx, r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.Config.RequestTimeout)
	defer cancel()
	res, err := c.RegisterThing(ctx, r.Config.TemplateName, r.Data.OwnershipToken, params)
	if err != nil {
		if failure.IsTransient(err) {
			s.Session.drop()
		}
		var rej *iotclient.Rejection
		if errors.As(err, &rej) && rej.ErrorCode == "InvalidCertificateOwnershipToken" {
			return fmt.Errorf("%w: %w", engine.ErrTokenUnusable, err)
		}
		return err
	}
	r.Data.TemplateName = r.Config.TemplateName
	r.Data.ThingName = res.ThingName
	r.Data.DeviceConfiguration = res.DeviceConfiguration
	// The client logs the answer; one record per event.
	return nil
}

// journaledParams are the parameters DeriveParams journaled. A journal
// written before parameters were journaled has none; the config's plain
// values are what that run would have sent, unless the config now names
// sources, whose values nobody derived for this identity.
func journaledParams(r *engine.Run) (map[string]string, error) {
	if r.Data.TemplateParams != nil {
		return maps.Clone(r.Data.TemplateParams), nil
	}
	if n := len(r.Config.ParamSources); n > 0 {
		return nil, fmt.Errorf("the journal holds no template parameters, but templateParams names %d source(s) (the config changed during provisioning): run `fleetprov run --force` to provision afresh", n)
	}
	return maps.Clone(r.Config.TemplateParams), nil
}
