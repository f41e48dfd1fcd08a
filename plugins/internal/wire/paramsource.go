package wire

import (
	"context"
	"maps"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/fleetprov/fleetprov/plugins/internal/pluginpb"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// ParamSourcePlugin serves Impl (plugin side) or dispenses a client named
// Name (host side).
type ParamSourcePlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl paramsource.ParamSource
	Name string
}

var _ plugin.GRPCPlugin = (*ParamSourcePlugin)(nil)

func (p *ParamSourcePlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginpb.RegisterParamSourceServer(s, &paramSourceServer{impl: p.Impl})
	return nil
}

func (p *ParamSourcePlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return NewParamSourceClient(p.Name, c), nil
}

type paramSourceServer struct {
	pluginpb.UnimplementedParamSourceServer
	impl paramsource.ParamSource
}

func (s *paramSourceServer) Params(ctx context.Context, req *pluginpb.ParamsRequest) (*pluginpb.ParamsResponse, error) {
	params := req.Params
	if params == nil {
		params = map[string]string{}
	}
	res, err := s.impl.Params(ctx, &paramsource.ParamsRequest{TemplateName: req.TemplateName, Params: params})
	if err != nil {
		return nil, toStatus(err)
	}
	if res == nil {
		return &pluginpb.ParamsResponse{}, nil
	}
	return &pluginpb.ParamsResponse{Params: res.Params}, nil
}

type paramSourceClient struct {
	name string
	c    pluginpb.ParamSourceClient
}

var _ paramsource.ParamSource = (*paramSourceClient)(nil)

// NewParamSourceClient returns the host's view of a plugin's ParamSource.
func NewParamSourceClient(name string, conn grpc.ClientConnInterface) paramsource.ParamSource {
	return &paramSourceClient{name: name, c: pluginpb.NewParamSourceClient(conn)}
}

func (c *paramSourceClient) Params(ctx context.Context, req *paramsource.ParamsRequest) (*paramsource.ParamsResponse, error) {
	res, err := c.c.Params(ctx, &pluginpb.ParamsRequest{TemplateName: req.TemplateName, Params: maps.Clone(req.Params)})
	if err != nil {
		return nil, fromStatus(c.name, "Params", err)
	}
	out := res.Params
	if out == nil {
		out = map[string]string{}
	}
	return &paramsource.ParamsResponse{Params: out}, nil
}
