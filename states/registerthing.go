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
	params := maps.Clone(r.Config.TemplateParams)
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
	r.Log.Info("thing registered", "thing", res.ThingName, "template", r.Config.TemplateName)
	return nil
}
