// Package remote runs the plugins a config names in a plugin host process
// (cmd/fleetprov-plugin-host), started the first time a call needs a
// plugin, and gives fleetprov the same view of them as plugins/host does
// in one process: key stores (also by plugin:NAME/KEY key URI), parameter
// sources and hooks, with the same errors.
//
// Why a second process: go-plugin links gRPC and protobuf, whose package
// initialisation touches a few MiB of the binary in every run, plugins or
// not. In the host process that cost is paid only by runs that use a
// plugin, which cost a process anyway. This package must not import
// go-plugin, gRPC or protobuf, directly or not (a test of cmd/fleetprov
// checks).
//
// The plugin host is found by FindHost. It stops its plugins and exits
// when Close asks it to, or when fleetprov's end of its stdin closes
// (fleetprov exited or crashed).
package remote

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/plugins/hook"
	"github.com/fleetprov/fleetprov/plugins/internal/abilities"
	"github.com/fleetprov/fleetprov/plugins/internal/pluginkeys"
	"github.com/fleetprov/fleetprov/plugins/internal/relay"
	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// Scheme is the key URI scheme of key stores served by plugins:
// plugin:NAME/KEY (see plugins/host).
const Scheme = pluginkeys.Scheme

// ErrClosed is returned by lookups after Close. It is plugins/host's
// ErrClosed too.
var ErrClosed = pluginkeys.ErrClosed

// PluginName returns NAME of a plugin:NAME/KEY key URI.
func PluginName(uri string) (string, error) { return pluginkeys.PluginName(uri) }

// Options configure a Host.
type Options struct {
	// Plugins are the plugins section of the config.
	Plugins []config.Plugin
	// Logger receives the plugins' logs and stderr, with plugin=NAME, and
	// the plugin host's own output.
	Logger *slog.Logger
}

// Host is fleetprov's end of the plugin host process of one command.
type Host struct {
	log     *slog.Logger
	plugins pluginkeys.Plugins
	list    []config.Plugin // sent to the plugin host as the config has them

	mu     sync.Mutex
	proc   *process
	closed bool
}

// New returns a Host for the configured plugins; no process starts until
// a plugin is needed. It becomes the Host that plugin: key URIs resolve
// against.
func New(o Options) *Host {
	h := &Host{log: o.Logger, plugins: pluginkeys.Index(o.Plugins), list: o.Plugins}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	pluginkeys.Activate(h)
	return h
}

// Close stops the plugin host, which stops every plugin, and waits until
// it is gone. Lookups after Close fail. It is safe to call more than once.
func (h *Host) Close() error {
	pluginkeys.Deactivate(h)
	h.mu.Lock()
	h.closed = true
	p := h.proc
	h.proc = nil
	h.mu.Unlock()
	if p != nil {
		p.close()
	}
	return nil
}

// process returns the running plugin host, starting it for plugin name
// if none runs (first use, or after it died).
func (h *Host) process(name string) (*process, error) {
	spec, err := h.plugins.Spec(name)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, fmt.Errorf("plugin %s: %w", name, ErrClosed)
	}
	if p := h.proc; p != nil && p.alive() {
		return p, nil
	}
	p, err := start(spec, h.list, h.log)
	if err != nil {
		return nil, err
	}
	h.proc = p
	return p, nil
}

// call makes one call for plugin name, starting the plugin host if need
// be; the host starts the plugin if need be.
func (h *Host) call(ctx context.Context, name, method string, req, res any) error {
	p, err := h.process(name)
	if err != nil {
		return err
	}
	return p.call(ctx, name, method, req, res)
}

// KeyStore starts plugin name if needed and returns its key store, with
// exactly the optional abilities the plugin implements.
func (h *Host) KeyStore(ctx context.Context, name string) (keystore.KeyStore, error) {
	var ab relay.KeyReply
	if err := h.call(ctx, name, relay.MethodKeyStore, &relay.KeyRequest{Plugin: name}, &ab); err != nil {
		return nil, err
	}
	c := &keyStore{h: h, name: name}
	return abilities.KeyStore(c, ab.ImportKey, ab.DeleteKey, ab.StoreCertificate), nil
}

// ParamSource returns plugin name's parameter source. The plugin (and the
// plugin host) start on the first call.
func (h *Host) ParamSource(name string) (paramsource.ParamSource, error) {
	if _, err := h.plugins.Spec(name); err != nil {
		return nil, err
	}
	return paramSource{h: h, name: name}, nil
}

// Hooks returns the plugins the config marks with hook: true, in config
// order, ready for engine.Options.Hooks. Each starts on its first event.
func (h *Host) Hooks() []hook.Hook {
	var out []hook.Hook
	for _, name := range h.plugins.Hooks() {
		out = append(out, hookPlugin{h: h, name: name})
	}
	return out
}

type paramSource struct {
	h    *Host
	name string
}

func (p paramSource) Params(ctx context.Context, req *paramsource.ParamsRequest) (*paramsource.ParamsResponse, error) {
	if req == nil {
		req = &paramsource.ParamsRequest{}
	}
	params := maps.Clone(req.Params)
	if params == nil {
		params = map[string]string{}
	}
	var res relay.ParamsReply
	if err := p.h.call(ctx, p.name, relay.MethodParams, &relay.ParamsRequest{Plugin: p.name, TemplateName: req.TemplateName, Params: params}, &res); err != nil {
		return nil, err
	}
	if res.Params == nil {
		res.Params = map[string]string{}
	}
	return &paramsource.ParamsResponse{Params: res.Params}, nil
}

type hookPlugin struct {
	h    *Host
	name string
}

// Name names the plugin in the engine's errors ("enter vetoed by plugin
// audit: ...").
func (k hookPlugin) Name() string { return "plugin " + k.name }

func (k hookPlugin) Notify(ctx context.Context, req *hook.NotifyRequest) (*hook.NotifyResponse, error) {
	ev := req.Event
	r := &relay.NotifyRequest{Plugin: k.name, Kind: string(ev.Kind), State: ev.State, Attempt: ev.Attempt, Error: ev.Error}
	if !ev.Time.IsZero() {
		r.Time = ev.Time.UnixNano()
	}
	if ev.Data != nil {
		b, err := json.Marshal(ev.Data)
		if err != nil {
			return nil, fmt.Errorf("plugin %s: Notify: event data cannot be sent as JSON: %w", k.name, err)
		}
		r.Data = b
	}
	var res relay.NotifyReply
	if err := k.h.call(ctx, k.name, relay.MethodNotify, r, &res); err != nil {
		return nil, err
	}
	v := hook.Verdict(res.Verdict)
	switch v {
	case hook.Proceed, hook.Veto, hook.RetryLater:
	default:
		return nil, fmt.Errorf("plugin %s: Notify: answered with verdict %q: a hook may answer %q, %q or nothing", k.name, res.Verdict, hook.Veto, hook.RetryLater)
	}
	return &hook.NotifyResponse{Verdict: v, Reason: res.Reason}, nil
}

// keyStore is a plugin's key store as fleetprov sees it. Its optional
// abilities are offered only when the plugin has them (see
// Host.KeyStore).
type keyStore struct {
	h    *Host
	name string
}

var (
	_ abilities.Client        = (*keyStore)(nil)
	_ paramsource.ParamSource = paramSource{}
	_ hook.Hook               = hookPlugin{}
	_ pluginkeys.Host         = (*Host)(nil)
)

func (c *keyStore) call(ctx context.Context, method string, req *relay.KeyRequest) (*relay.KeyReply, error) {
	req.Plugin = c.name
	var res relay.KeyReply
	if err := c.h.call(ctx, c.name, method, req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

func relayOwner(o *keystore.Owner) *relay.Owner {
	if o == nil {
		return nil
	}
	return &relay.Owner{UID: o.UID, GID: o.GID}
}

func (c *keyStore) parsePublic(der []byte, call string) (crypto.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %s: answered with a public key that is not PKIX DER: %w", c.name, call, err)
	}
	return pub, nil
}

func (c *keyStore) CreateKey(ctx context.Context, req *keystore.CreateKeyRequest) (*keystore.CreateKeyResponse, error) {
	res, err := c.call(ctx, relay.MethodCreateKey, &relay.KeyRequest{URI: req.URI, Algorithm: string(req.Algorithm), Owner: relayOwner(req.Owner)})
	if err != nil {
		return nil, err
	}
	pub, err := c.parsePublic(res.PublicKey, "CreateKey")
	if err != nil {
		return nil, err
	}
	uri := res.URI
	if uri == "" {
		uri = req.URI
	}
	return &keystore.CreateKeyResponse{URI: uri, PublicKey: pub}, nil
}

func (c *keyStore) GetPublicKey(ctx context.Context, req *keystore.GetPublicKeyRequest) (crypto.PublicKey, error) {
	res, err := c.call(ctx, relay.MethodGetPublicKey, &relay.KeyRequest{URI: req.URI})
	if err != nil {
		return nil, err
	}
	return c.parsePublic(res.PublicKey, "GetPublicKey")
}

// CreateSigner checks that the key exists and learns its public key; each
// Sign is then one call, and the private key stays in the plugin.
func (c *keyStore) CreateSigner(ctx context.Context, req *keystore.CreateSignerRequest) (crypto.Signer, error) {
	res, err := c.call(ctx, relay.MethodCreateSigner, &relay.KeyRequest{URI: req.URI})
	if err != nil {
		return nil, err
	}
	pub, err := c.parsePublic(res.PublicKey, "GetPublicKey")
	if err != nil {
		return nil, err
	}
	return &signer{c: c, uri: req.URI, pub: pub}, nil
}

// Close releases nothing: the plugin belongs to the Host.
func (c *keyStore) Close() error { return nil }

type signer struct {
	c   *keyStore
	uri string
	pub crypto.PublicKey
}

func (s *signer) Public() crypto.PublicKey { return s.pub }

// Sign sends the digest and the signer options; the random source is the
// plugin's own. crypto.Signer carries no context: the plugin's callTimeout
// bounds it.
func (s *signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	req := &relay.KeyRequest{URI: s.uri, Digest: digest, Hash: opts.HashFunc()}
	if pss, ok := opts.(*rsa.PSSOptions); ok {
		req.PSS = true
		req.SaltLength = pss.SaltLength
	}
	res, err := s.c.call(context.Background(), relay.MethodSign, req)
	if err != nil {
		return nil, err
	}
	return res.Signature, nil
}

func (c *keyStore) ImportKey(ctx context.Context, req *keystore.ImportKeyRequest) error {
	der, err := x509.MarshalPKCS8PrivateKey(req.PrivateKey)
	if err != nil {
		return fmt.Errorf("plugin %s: ImportKey %s: encode the private key: %w", c.name, req.URI, err)
	}
	_, err = c.call(ctx, relay.MethodImportKey, &relay.KeyRequest{URI: req.URI, PrivateKey: der, Owner: relayOwner(req.Owner)})
	clear(der)
	return err
}

func (c *keyStore) DeleteKey(ctx context.Context, req *keystore.DeleteKeyRequest) error {
	_, err := c.call(ctx, relay.MethodDeleteKey, &relay.KeyRequest{URI: req.URI})
	return err
}

func (c *keyStore) StoreCertificate(ctx context.Context, req *keystore.StoreCertificateRequest) error {
	_, err := c.call(ctx, relay.MethodStoreCertificate, &relay.KeyRequest{URI: req.URI, Certificate: req.Certificate.Raw})
	return err
}
