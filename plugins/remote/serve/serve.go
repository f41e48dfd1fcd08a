// Package serve is the plugin host process (cmd/fleetprov-plugin-host):
// it runs the plugins of fleetprov's config with plugins/host, exactly as
// fleetprov once did in its own process, and serves them to the fleetprov
// that started it over its stdin and stdout (the protocol is in
// plugins/internal/relay). fleetprov itself never imports this package:
// it links go-plugin and gRPC, which is what the second process keeps out
// of fleetprov.
package serve

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/hook"
	"github.com/fleetprov/fleetprov/plugins/host"
	"github.com/fleetprov/fleetprov/plugins/internal/relay"
	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// Main serves on the process's stdin and stdout and returns the exit code.
func Main() int {
	// fleetprov decides when the plugins stop: a Ctrl-C on the terminal
	// reaches the whole process group, and fleetprov, cancelling its run,
	// closes this host itself; EOF on stdin covers a fleetprov that died.
	// Writing to the stdout of a fleetprov that died must fail, not kill
	// the host before it stops its plugins. Caught rather than ignored: an
	// ignored signal would stay ignored in the plugins this host starts.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGPIPE)
	go func() {
		for range sigs {
		}
	}()
	out := os.Stdout
	// Anything else printing to stdout would corrupt the stream.
	os.Stdout = os.Stderr
	return Serve(os.Stdin, out, os.Stderr)
}

// Serve runs the host until in reaches EOF or fleetprov asks it to close;
// complaints that cannot reach fleetprov go to errOut.
func Serve(in io.Reader, out, errOut io.Writer) int {
	w := relay.NewWriter(out)
	if err := w.Write(relay.Hello{Magic: relay.Magic, Version: relay.Version}); err != nil {
		fmt.Fprintf(errOut, "fleetprov-plugin-host: cannot write to fleetprov: %v\n", err)
		return 1
	}
	dec := cbor.NewDecoder(in)
	var hello relay.Hello
	if err := dec.Decode(&hello); err != nil {
		if errors.Is(err, io.EOF) {
			return 0
		}
		fmt.Fprintln(errOut, "fleetprov-plugin-host: fleetprov starts this program when a run needs a plugin; it is not run by hand")
		return 2
	}
	if hello.Magic != relay.ClientMagic || hello.Version != relay.Version {
		// A fleetprov of another version reads this host's Hello and
		// says so itself; this is for one of the same version that
		// still says something else.
		msg := fmt.Sprintf("it speaks relay protocol version %d, magic %q; this host speaks version %d, magic %q", hello.Version, hello.Magic, relay.Version, relay.ClientMagic)
		_ = w.Write(&relay.Frame{Kind: relay.KindReady, Err: relay.EncodeError(errors.New(msg))})
		fmt.Fprintf(errOut, "fleetprov-plugin-host: refused the program that started it: %s\n", msg)
		return 2
	}
	s := &server{
		w:       w,
		calls:   map[uint64]context.CancelFunc{},
		stores:  map[string]keystore.KeyStore{},
		signers: map[signerKey]crypto.Signer{},
		hooks:   map[string]hook.Hook{},
	}
	s.host = host.New(host.Options{Plugins: hello.Plugins, Logger: slog.New(&forward{w: w, min: hello.LogLevel})})
	for _, h := range s.host.Hooks() {
		if n, ok := h.(interface{ Name() string }); ok {
			s.hooks[strings.TrimPrefix(n.Name(), "plugin ")] = h
		}
	}
	if err := w.Write(&relay.Frame{Kind: relay.KindReady}); err != nil {
		s.stop()
		return 0
	}
	for {
		var f relay.Frame
		if err := dec.Decode(&f); err != nil {
			// EOF: fleetprov exited or crashed.
			break
		}
		switch f.Kind {
		case relay.KindCall:
			if f.Method == relay.MethodClose {
				s.stop()
				_ = w.Write(&relay.Frame{Kind: relay.KindReply, ID: f.ID})
				return 0
			}
			s.start(f)
		case relay.KindCancel:
			s.mu.Lock()
			if cancel := s.calls[f.ID]; cancel != nil {
				cancel()
			}
			s.mu.Unlock()
		}
	}
	s.stop()
	return 0
}

type signerKey struct{ plugin, uri string }

type server struct {
	w    *relay.Writer
	host *host.Host

	mu    sync.Mutex
	calls map[uint64]context.CancelFunc
	// stores and signers are the key store clients of running plugins,
	// kept so that each call is one call to the plugin; a transient
	// failure (a crash, a hang) forgets the plugin's, and the next call
	// asks the host again, which starts it again.
	stores  map[string]keystore.KeyStore
	signers map[signerKey]crypto.Signer
	hooks   map[string]hook.Hook
}

func (s *server) start(f relay.Frame) {
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if f.Deadline != 0 {
		ctx, cancel = context.WithDeadline(ctx, time.Unix(0, f.Deadline))
	}
	ctx, cancel2 := context.WithCancel(ctx)
	s.mu.Lock()
	s.calls[f.ID] = cancel2
	s.mu.Unlock()
	go func() {
		defer cancel()
		body, err := s.dispatch(ctx, f.Method, f.Body)
		s.mu.Lock()
		delete(s.calls, f.ID)
		s.mu.Unlock()
		cancel2()
		reply := &relay.Frame{Kind: relay.KindReply, ID: f.ID, Err: relay.EncodeError(err)}
		if err == nil {
			reply.Body = body
		}
		_ = s.w.Write(reply)
	}()
}

// stop cancels every call and stops every plugin.
func (s *server) stop() {
	s.mu.Lock()
	for _, cancel := range s.calls {
		cancel()
	}
	s.mu.Unlock()
	s.host.Close()
}

func (s *server) dispatch(ctx context.Context, method string, body []byte) ([]byte, error) {
	switch method {
	case relay.MethodParams:
		var req relay.ParamsRequest
		if err := cbor.Unmarshal(body, &req); err != nil {
			return nil, badRequest(method, err)
		}
		src, err := s.host.ParamSource(req.Plugin)
		if err != nil {
			return nil, err
		}
		res, err := src.Params(ctx, &paramsource.ParamsRequest{TemplateName: req.TemplateName, Params: req.Params})
		if err != nil {
			return nil, err
		}
		return cbor.Marshal(relay.ParamsReply{Params: res.Params})
	case relay.MethodNotify:
		var req relay.NotifyRequest
		if err := cbor.Unmarshal(body, &req); err != nil {
			return nil, badRequest(method, err)
		}
		return s.notify(ctx, &req)
	}
	var req relay.KeyRequest
	if err := cbor.Unmarshal(body, &req); err != nil {
		return nil, badRequest(method, err)
	}
	res, err := s.key(ctx, method, &req)
	if err != nil {
		if failure.IsTransient(err) {
			s.forget(req.Plugin)
		}
		return nil, err
	}
	return cbor.Marshal(res)
}

func badRequest(method string, err error) error {
	return fmt.Errorf("plugin host: %s: the request does not decode (%v): fleetprov and fleetprov-plugin-host are of different builds; install them together", method, err)
}

func (s *server) forget(plugin string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.stores, plugin)
	for k := range s.signers {
		if k.plugin == plugin {
			delete(s.signers, k)
		}
	}
}

func (s *server) keyStore(ctx context.Context, plugin string, fresh bool) (keystore.KeyStore, error) {
	s.mu.Lock()
	ks := s.stores[plugin]
	s.mu.Unlock()
	if ks != nil && !fresh {
		return ks, nil
	}
	ks, err := s.host.KeyStore(ctx, plugin)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.stores[plugin] = ks
	s.mu.Unlock()
	return ks, nil
}

func (s *server) signer(ctx context.Context, ks keystore.KeyStore, req *relay.KeyRequest, fresh bool) (crypto.Signer, error) {
	k := signerKey{req.Plugin, req.URI}
	s.mu.Lock()
	sg := s.signers[k]
	s.mu.Unlock()
	if sg != nil && !fresh {
		return sg, nil
	}
	sg, err := ks.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: req.URI})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.signers[k] = sg
	s.mu.Unlock()
	return sg, nil
}

func owner(o *relay.Owner) *keystore.Owner {
	if o == nil {
		return nil
	}
	return &keystore.Owner{UID: o.UID, GID: o.GID}
}

func (s *server) key(ctx context.Context, method string, req *relay.KeyRequest) (*relay.KeyReply, error) {
	// Asking for the key store is what starts a plugin that is not
	// running, as keystore.Open does in one process.
	ks, err := s.keyStore(ctx, req.Plugin, method == relay.MethodKeyStore)
	if err != nil {
		return nil, err
	}
	switch method {
	case relay.MethodKeyStore:
		_, imp := ks.(keystore.KeyImporter)
		_, del := ks.(keystore.KeyDeleter)
		_, crt := ks.(keystore.CertificateStorer)
		return &relay.KeyReply{ImportKey: imp, DeleteKey: del, StoreCertificate: crt}, nil
	case relay.MethodCreateKey:
		res, err := ks.CreateKey(ctx, &keystore.CreateKeyRequest{URI: req.URI, Algorithm: keystore.Algorithm(req.Algorithm), Owner: owner(req.Owner)})
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKIXPublicKey(res.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("plugin %s: CreateKey: encode the public key of %s: %w", req.Plugin, req.URI, err)
		}
		return &relay.KeyReply{URI: res.URI, PublicKey: der}, nil
	case relay.MethodGetPublicKey:
		pub, err := ks.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: req.URI})
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("plugin %s: GetPublicKey: encode the public key of %s: %w", req.Plugin, req.URI, err)
		}
		return &relay.KeyReply{PublicKey: der}, nil
	case relay.MethodCreateSigner:
		sg, err := s.signer(ctx, ks, req, true)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKIXPublicKey(sg.Public())
		if err != nil {
			return nil, fmt.Errorf("plugin %s: CreateSigner: encode the public key of %s: %w", req.Plugin, req.URI, err)
		}
		return &relay.KeyReply{PublicKey: der}, nil
	case relay.MethodSign:
		sg, err := s.signer(ctx, ks, req, false)
		if err != nil {
			return nil, err
		}
		var opts crypto.SignerOpts = req.Hash
		if req.PSS {
			opts = &rsa.PSSOptions{SaltLength: req.SaltLength, Hash: req.Hash}
		}
		sig, err := sg.Sign(rand.Reader, req.Digest, opts)
		if err != nil {
			return nil, err
		}
		return &relay.KeyReply{Signature: sig}, nil
	case relay.MethodImportKey:
		imp, ok := ks.(keystore.KeyImporter)
		if !ok {
			return nil, fmt.Errorf("plugin %s: this key store cannot import keys: %w", req.Plugin, errors.ErrUnsupported)
		}
		key, err := x509.ParsePKCS8PrivateKey(req.PrivateKey)
		clear(req.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("plugin %s: ImportKey %s: the private key is not PKCS #8 DER", req.Plugin, req.URI)
		}
		return &relay.KeyReply{}, imp.ImportKey(ctx, &keystore.ImportKeyRequest{URI: req.URI, PrivateKey: key, Owner: owner(req.Owner)})
	case relay.MethodDeleteKey:
		del, ok := ks.(keystore.KeyDeleter)
		if !ok {
			return nil, fmt.Errorf("plugin %s: this key store cannot delete keys: %w", req.Plugin, errors.ErrUnsupported)
		}
		return &relay.KeyReply{}, del.DeleteKey(ctx, &keystore.DeleteKeyRequest{URI: req.URI})
	case relay.MethodStoreCertificate:
		st, ok := ks.(keystore.CertificateStorer)
		if !ok {
			return nil, fmt.Errorf("plugin %s: this key store cannot store certificates: %w", req.Plugin, errors.ErrUnsupported)
		}
		cert, err := x509.ParseCertificate(req.Certificate)
		if err != nil {
			return nil, fmt.Errorf("plugin %s: StoreCertificate for %s: not a DER certificate: %w", req.Plugin, req.URI, err)
		}
		return &relay.KeyReply{}, st.StoreCertificate(ctx, &keystore.StoreCertificateRequest{URI: req.URI, Certificate: cert})
	}
	return nil, fmt.Errorf("plugin host: unknown call %q: fleetprov and fleetprov-plugin-host are of different builds; install them together", method)
}

func (s *server) notify(ctx context.Context, req *relay.NotifyRequest) ([]byte, error) {
	h := s.hooks[req.Plugin]
	if h == nil {
		return nil, fmt.Errorf("plugin %s is not a hook: set hook: true on it in the plugins section", req.Plugin)
	}
	ev := hook.Event{Kind: hook.Kind(req.Kind), State: req.State, Attempt: req.Attempt, Error: req.Error}
	if req.Time != 0 {
		ev.Time = time.Unix(0, req.Time)
	}
	if len(req.Data) > 0 {
		// Numbers stay as fleetprov wrote them on their way on to the
		// plugin, which gets the data as JSON.
		d := json.NewDecoder(strings.NewReader(string(req.Data)))
		d.UseNumber()
		if err := d.Decode(&ev.Data); err != nil {
			return nil, fmt.Errorf("plugin %s: Notify: event data is not a JSON object: %w", req.Plugin, err)
		}
	}
	res, err := h.Notify(ctx, &hook.NotifyRequest{Event: ev})
	if err != nil {
		return nil, err
	}
	return cbor.Marshal(relay.NotifyReply{Verdict: string(res.Verdict), Reason: res.Reason})
}

// forward is a slog.Handler that sends each record to fleetprov, which
// logs it through its own logger: the plugins' records and stderr lines
// (plugins/host routes both here, with plugin=NAME) and the host's own.
type forward struct {
	w      *relay.Writer
	min    slog.Level
	attrs  []slog.Attr // outside any group
	groups []group     // open groups, outermost first
}

type group struct {
	name  string
	attrs []slog.Attr
}

func (f *forward) Enabled(_ context.Context, l slog.Level) bool { return l >= f.min }

func (f *forward) Handle(_ context.Context, r slog.Record) error {
	var inner []slog.Attr
	r.Attrs(func(a slog.Attr) bool {
		inner = append(inner, a)
		return true
	})
	for i := len(f.groups) - 1; i >= 0; i-- {
		g := f.groups[i]
		args := make([]any, 0, len(g.attrs)+len(inner))
		for _, a := range append(append([]slog.Attr(nil), g.attrs...), inner...) {
			args = append(args, a)
		}
		inner = []slog.Attr{slog.Group(g.name, args...)}
	}
	rec := &relay.Record{Level: r.Level, Msg: r.Message}
	for _, a := range append(append([]slog.Attr(nil), f.attrs...), inner...) {
		rec.Attrs = append(rec.Attrs, relay.EncodeAttr(a))
	}
	return f.w.Write(&relay.Frame{Kind: relay.KindLog, Log: rec})
}

func (f *forward) WithAttrs(as []slog.Attr) slog.Handler {
	c := *f
	if len(c.groups) == 0 {
		c.attrs = append(append([]slog.Attr(nil), f.attrs...), as...)
		return &c
	}
	c.groups = append([]group(nil), f.groups...)
	last := &c.groups[len(c.groups)-1]
	last.attrs = append(append([]slog.Attr(nil), last.attrs...), as...)
	return &c
}

func (f *forward) WithGroup(name string) slog.Handler {
	if name == "" {
		return f
	}
	c := *f
	c.groups = append(append([]group(nil), f.groups...), group{name: name})
	return &c
}
