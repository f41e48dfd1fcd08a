package iotclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// Proxy is an HTTP proxy that the device reaches the endpoint through,
// with CONNECT. TLS runs inside the tunnel, end to end with the endpoint:
// the proxy sees neither the certificates' keys nor the MQTT traffic.
type Proxy struct {
	// URL is http://host[:port]. Credentials belong in Username and
	// Password, so that the URL can be shown; ones in the URL are used
	// when those are empty.
	URL      string
	Username string
	Password string
	// NoProxy lists the hosts reached directly, spelled as no_proxy is:
	// comma-separated names ("example.com" matches it and its
	// subdomains, ".example.com" its subdomains only), IP addresses and
	// CIDR ranges, each with an optional :port, or "*" for all.
	// localhost and loopback addresses are always reached directly.
	NoProxy string
}

// proxyFor returns the proxy's URL for a connection to addr (host:port),
// or nil when addr is to be reached directly.
func (p *Proxy) proxyFor(addr string) (*url.URL, error) {
	if p == nil || p.URL == "" {
		return nil, nil
	}
	// Parsed here, not by httpproxy: it ignores a URL it cannot parse,
	// and the device would then bypass the proxy without a word.
	u, err := url.Parse(p.URL)
	if err != nil {
		// Its message quotes the URL, credentials and all.
		return nil, errors.New("iotclient: the proxy URL is not a valid URL: write it like http://proxy.example.com:3128")
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("iotclient: proxy scheme %q is not supported: use an http:// proxy", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("iotclient: proxy URL %s has no host", u.Redacted())
	}
	// httpproxy decides only whether the no-proxy list (and its rule that
	// loopback is never proxied) sends addr around the proxy.
	pick := (&httpproxy.Config{HTTPSProxy: u.String(), NoProxy: p.NoProxy}).ProxyFunc()
	if via, err := pick(&url.URL{Scheme: "https", Host: addr}); err != nil || via == nil {
		return nil, err
	}
	return u, nil
}

// ProxyError is a proxy that did not open a tunnel to the endpoint. The
// message names the proxy by host:port only: never its credentials.
type ProxyError struct {
	Proxy      string // host:port
	Target     string // the endpoint's host:port
	StatusCode int    // the proxy's answer to CONNECT; 0 if it gave none
	// Credentials says whether the CONNECT carried any.
	Credentials bool
	// AuthSchemes are the authentication schemes a 407 offered
	// (Proxy-Authenticate), when none of them is Basic.
	AuthSchemes []string
	Err         error // the cause when StatusCode is 0
}

func (e *ProxyError) Error() string {
	status := func() string { return fmt.Sprintf("%d %s", e.StatusCode, http.StatusText(e.StatusCode)) }
	switch {
	case e.StatusCode == 0 && e.Err != nil && e.unreachable():
		return fmt.Sprintf("connecting to proxy %s: %v", e.Proxy, e.Err)
	case e.StatusCode == 0:
		return fmt.Sprintf("proxy %s: no answer to CONNECT %s: %v", e.Proxy, e.Target, e.Err)
	case e.StatusCode == http.StatusProxyAuthRequired && len(e.AuthSchemes) > 0:
		return fmt.Sprintf("proxy %s accepts only %s authentication, and fleetprov sends Basic: allow Basic authentication for this device on the proxy", e.Proxy, strings.Join(e.AuthSchemes, " or "))
	case e.StatusCode == http.StatusProxyAuthRequired && !e.Credentials:
		return fmt.Sprintf("proxy %s wants credentials: set networkProxy.proxy.username/password", e.Proxy)
	case e.StatusCode == http.StatusProxyAuthRequired:
		return fmt.Sprintf("proxy %s refused the credentials (%s): check networkProxy.proxy.username/password", e.Proxy, status())
	case e.StatusCode == http.StatusForbidden:
		return fmt.Sprintf("proxy %s refused to open a tunnel to %s (%s): allow it on the proxy, or list the endpoint in networkProxy.noProxyAddresses", e.Proxy, e.Target, status())
	case e.Transient():
		return fmt.Sprintf("proxy %s could not open a tunnel to %s (%s)", e.Proxy, e.Target, status())
	default:
		return fmt.Sprintf("proxy %s answered CONNECT %s with %s: check that networkProxy.proxy.url names an HTTP proxy", e.Proxy, e.Target, status())
	}
}

func (e *ProxyError) Unwrap() error { return e.Err }

// Transient reports whether trying again may get through: the proxy was
// down, or it could not reach the endpoint this time. A refusal (407,
// 403, or an answer that is not a tunnel) repeats until the config
// changes.
func (e *ProxyError) Transient() bool {
	switch {
	case e.StatusCode == 0:
		return e.Err != nil && !errors.Is(e.Err, errNotHTTP)
	case e.StatusCode == http.StatusRequestTimeout, e.StatusCode == http.StatusTooManyRequests:
		return true
	default:
		return e.StatusCode >= 500
	}
}

// unreachable reports a proxy that was never reached: the dial failed.
func (e *ProxyError) unreachable() bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	return errors.As(e.Err, &dnsErr) || (errors.As(e.Err, &opErr) && opErr.Op == "dial")
}

var errNotHTTP = errors.New("the answer is not HTTP")

// maxNotHTTPShown bounds how much of an answer that is not HTTP an error
// quotes.
const maxNotHTTPShown = 120

// maxConnectAnswer bounds what is read of a proxy's answer to CONNECT:
// a status line and a few headers.
const maxConnectAnswer = 64 << 10

// dialer opens every connection the device makes to the endpoint (the
// claim connection, the certificate probe, a connection with the device's
// own certificate): TCP, directly or through the proxy, then TLS.
type dialer struct {
	tls   *tls.Config
	proxy *Proxy
	log   *slog.Logger
}

// dial connects to addr (host:port) and completes the TLS handshake.
// ctx bounds all of it.
func (d dialer) dial(ctx context.Context, addr string) (*tls.Conn, error) {
	pu, err := d.proxy.proxyFor(addr)
	if err != nil {
		return nil, err
	}
	var raw net.Conn
	if pu == nil {
		raw, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	} else {
		raw, err = d.tunnel(ctx, pu, addr)
	}
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, d.tls)
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, err
	}
	return conn, nil
}

// tunnel asks the proxy at pu for a tunnel to addr.
func (d dialer) tunnel(ctx context.Context, pu *url.URL, addr string) (net.Conn, error) {
	proxyAddr := pu.Host
	if pu.Port() == "" {
		proxyAddr = net.JoinHostPort(pu.Hostname(), "80")
	}
	logger := d.log
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger.Debug("connecting through proxy", slog.String("proxy", proxyAddr), slog.String("target", addr))
	perr := &ProxyError{Proxy: proxyAddr, Target: addr}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		perr.Err = err
		return nil, perr
	}
	// The exchange below reads and writes the connection directly: make
	// ctx end it.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: addr},
		Host:   addr,
		Header: http.Header{},
	}
	user, pass := d.proxy.Username, d.proxy.Password
	if user == "" && pass == "" && pu.User != nil {
		// Credentials written in the URL, as in https_proxy.
		user = pu.User.Username()
		pass, _ = pu.User.Password()
	}
	if user != "" || pass != "" {
		perr.Credentials = true
		token := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		req.Header.Set("Proxy-Authorization", "Basic "+token)
	}
	fail := func(err error) (net.Conn, error) {
		_ = conn.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		perr.Err = err
		return nil, perr
	}
	if err := req.Write(conn); err != nil {
		return fail(err)
	}
	br := bufio.NewReader(io.LimitReader(conn, maxConnectAnswer))
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isNetError(err) {
			// The parser quotes what it could not parse: whatever the
			// other side sent, so bounded.
			err = fmt.Errorf("%w: %s", errNotHTTP, strings.ToValidUTF8(truncate(err.Error(), maxNotHTTPShown), "?"))
		}
		return fail(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_ = conn.Close()
		perr.StatusCode = resp.StatusCode
		if resp.StatusCode == http.StatusProxyAuthRequired {
			perr.AuthSchemes = otherAuthSchemes(resp.Header.Values("Proxy-Authenticate"))
		}
		return nil, perr
	}
	if stop(); ctx.Err() != nil {
		return fail(ctx.Err())
	}
	if n := br.Buffered(); n > 0 {
		// The endpoint spoke before the device did (TLS servers do not),
		// and the bytes were read with the proxy's answer: keep them.
		early, _ := br.Peek(n)
		return &prefixConn{Conn: conn, r: io.MultiReader(strings.NewReader(string(early)), conn)}, nil
	}
	return conn, nil
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// otherAuthSchemes returns the schemes a proxy's challenges name (NTLM,
// Negotiate, Digest), or none if one of them is Basic: the only scheme
// fleetprov speaks. Each is a short token, never the challenge itself.
func otherAuthSchemes(challenges []string) []string {
	var out []string
	for _, c := range challenges {
		scheme, _, _ := strings.Cut(strings.TrimSpace(c), " ")
		if strings.EqualFold(scheme, "basic") {
			return nil
		}
		if len(scheme) == 0 || len(scheme) > 20 || strings.IndexFunc(scheme, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
		}) >= 0 {
			continue
		}
		if !slices.Contains(out, scheme) {
			out = append(out, scheme)
		}
		if len(out) == 4 {
			break
		}
	}
	return out
}
