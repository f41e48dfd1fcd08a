package wire

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleetprov/fleetprov/plugins/hook"
	"github.com/fleetprov/fleetprov/plugins/internal/pluginpb"
)

// HookPlugin serves Impl (plugin side) or dispenses a client named Name
// (host side).
type HookPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl hook.Hook
	Name string
}

var _ plugin.GRPCPlugin = (*HookPlugin)(nil)

func (p *HookPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginpb.RegisterHookServer(s, &hookServer{impl: p.Impl})
	return nil
}

func (p *HookPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return NewHookClient(p.Name, c), nil
}

type hookServer struct {
	pluginpb.UnimplementedHookServer
	impl hook.Hook
}

func (s *hookServer) Notify(ctx context.Context, req *pluginpb.NotifyRequest) (*pluginpb.NotifyResponse, error) {
	pe := req.GetEvent()
	ev := hook.Event{
		Kind:    hook.Kind(pe.GetKind()),
		State:   pe.GetState(),
		Attempt: int(pe.GetAttempt()),
		Error:   pe.GetError(),
	}
	if ns := pe.GetTimeUnixNano(); ns != 0 {
		ev.Time = time.Unix(0, ns)
	}
	if len(pe.GetDataJson()) > 0 {
		if err := json.Unmarshal(pe.GetDataJson(), &ev.Data); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "event data is not a JSON object: %v", err)
		}
	}
	res, err := s.impl.Notify(ctx, &hook.NotifyRequest{Event: ev})
	if err != nil {
		return nil, toStatus(err)
	}
	if res == nil {
		return &pluginpb.NotifyResponse{}, nil
	}
	return &pluginpb.NotifyResponse{Verdict: string(res.Verdict), Reason: res.Reason}, nil
}

type hookClient struct {
	name string
	c    pluginpb.HookClient
}

var _ hook.Hook = (*hookClient)(nil)

// NewHookClient returns the host's view of a plugin's Hook.
func NewHookClient(name string, conn grpc.ClientConnInterface) hook.Hook {
	return &hookClient{name: name, c: pluginpb.NewHookClient(conn)}
}

func (c *hookClient) Notify(ctx context.Context, req *hook.NotifyRequest) (*hook.NotifyResponse, error) {
	ev := req.Event
	pe := &pluginpb.Event{Kind: string(ev.Kind), State: ev.State, Attempt: int64(ev.Attempt), Error: ev.Error}
	if !ev.Time.IsZero() {
		pe.TimeUnixNano = ev.Time.UnixNano()
	}
	if ev.Data != nil {
		b, err := json.Marshal(ev.Data)
		if err != nil {
			return nil, fmt.Errorf("plugin %s: Notify: event data cannot be sent as JSON: %w", c.name, err)
		}
		pe.DataJson = b
	}
	res, err := c.c.Notify(ctx, &pluginpb.NotifyRequest{Event: pe})
	if err != nil {
		return nil, fromStatus(c.name, "Notify", err)
	}
	v := hook.Verdict(res.Verdict)
	switch v {
	case hook.Proceed, hook.Veto, hook.RetryLater:
	default:
		return nil, fmt.Errorf("plugin %s: Notify: answered with verdict %q: a hook may answer %q, %q or nothing", c.name, res.Verdict, hook.Veto, hook.RetryLater)
	}
	return &hook.NotifyResponse{Verdict: v, Reason: res.Reason}, nil
}
