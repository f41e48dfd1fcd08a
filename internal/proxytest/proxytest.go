// Package proxytest runs a real HTTP CONNECT proxy for tests: it checks
// Basic credentials, counts and records the tunnels asked for, and can
// reach names nothing else can resolve, so that a test can prove a
// connection went through it.
package proxytest

import (
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Options configure a proxy.
type Options struct {
	// Listen is the address to listen on; "" is 127.0.0.1:0.
	Listen string
	// Username and Password, when either is set, are the credentials
	// every CONNECT must carry (Proxy-Authorization: Basic); without
	// them, or with others, the proxy answers 407.
	Username, Password string
	// Routes maps a CONNECT target (host:port as the client asked) to
	// the address the proxy dials instead: how a test gives the cloud a
	// name or address only the proxy can reach.
	Routes map[string]string
	// Challenges are the Proxy-Authenticate headers of a 407; none
	// means one Basic challenge.
	Challenges []string
	// Answer, when not 0, is the status every CONNECT gets (after the
	// credentials check) instead of a tunnel: 403, 502 and so on.
	Answer int
}

// Proxy is a running proxy.
type Proxy struct {
	opts Options
	ln   net.Listener
	srv  *http.Server

	mu      sync.Mutex
	targets []string // every CONNECT's target, in order
	auth    []string // every CONNECT's Proxy-Authorization header, in order
	tunnels int      // CONNECTs answered 200
	conns   map[net.Conn]struct{}
	closed  bool
}

// Start listens and serves until Close.
func Start(o Options) (*Proxy, error) {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("proxytest: listen on %s: %w", o.Listen, err)
	}
	p := &Proxy{opts: o, ln: ln, conns: map[net.Conn]struct{}{}}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: time.Minute}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's http:// URL, without credentials.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// Connects is how many CONNECT requests the proxy received.
func (p *Proxy) Connects() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.targets)
}

// Tunnels is how many tunnels the proxy opened.
func (p *Proxy) Tunnels() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tunnels
}

// Targets lists every CONNECT's target, in order.
func (p *Proxy) Targets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.targets)
}

// Authorizations lists every CONNECT's Proxy-Authorization header ("" for
// none), in order.
func (p *Proxy) Authorizations() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.auth)
}

// Close stops the proxy and ends every tunnel.
func (p *Proxy) Close() error {
	err := p.srv.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	return err
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "only CONNECT", http.StatusMethodNotAllowed)
		return
	}
	target := r.Host
	p.mu.Lock()
	p.targets = append(p.targets, target)
	p.auth = append(p.auth, r.Header.Get("Proxy-Authorization"))
	p.mu.Unlock()

	if p.opts.Username != "" || p.opts.Password != "" {
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.opts.Username+":"+p.opts.Password))
		if r.Header.Get("Proxy-Authorization") != want {
			challenges := p.opts.Challenges
			if len(challenges) == 0 {
				challenges = []string{`Basic realm="proxytest"`}
			}
			for _, c := range challenges {
				w.Header().Add("Proxy-Authenticate", c)
			}
			w.WriteHeader(http.StatusProxyAuthRequired)
			return
		}
	}
	if p.opts.Answer != 0 {
		w.WriteHeader(p.opts.Answer)
		return
	}
	dest := target
	if to, ok := p.opts.Routes[target]; ok {
		dest = to
	}
	up, err := net.DialTimeout("tcp", dest, time.Minute)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		_ = up.Close()
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	down, rw, err := hj.Hijack()
	if err != nil {
		_ = up.Close()
		return
	}
	if !p.track(up, down) {
		return
	}
	p.mu.Lock()
	p.tunnels++
	p.mu.Unlock()
	if _, err := io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		p.untrack(up, down)
		return
	}
	go func() {
		// What the client sent after its CONNECT, already buffered.
		if n := rw.Reader.Buffered(); n > 0 {
			b, _ := rw.Reader.Peek(n)
			_, _ = up.Write(b)
		}
		_, _ = io.Copy(up, down)
		closeWrite(up)
	}()
	go func() {
		_, _ = io.Copy(down, up)
		p.untrack(up, down)
	}()
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
		delete(p.conns, c)
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}
