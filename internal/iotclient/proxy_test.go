package iotclient

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/internal/proxytest"
)

// Names and addresses only the test proxy can reach: the device's own
// resolver knows no .test name, and 2001:db8::/32 is for documentation.
const (
	hiddenName = "iot.fleetprov.test"
	hiddenIPv6 = "2001:db8::1"
)

// useServerHosts gives the broker a certificate for hosts (names or IP
// addresses) from the device's root CA.
func (p *pki) useServerHosts(t testing.TB, hosts ...string) {
	t.Helper()
	p.serverCert, p.serverKey = p.serverCA.issue(t, hosts[0], hosts...)
}

// hiddenBroker is a broker whose certificate names hiddenName and
// hiddenIPv6, and a proxy that routes both (port 8883) to it.
func hiddenBroker(t testing.TB, po proxytest.Options) (*pki, *fakeAWS, *proxytest.Proxy) {
	t.Helper()
	p := newPKI(t)
	p.useServerHosts(t, hiddenName, hiddenIPv6, "127.0.0.1")
	f := startBroker(t, p.serverTLS(t))
	po.Routes = map[string]string{
		hiddenName + ":8883":        f.addr,
		"[" + hiddenIPv6 + "]:8883": f.addr,
		hiddenName + ":443":         f.addr,
		"[" + hiddenIPv6 + "]:443":  f.addr,
	}
	return p, f, startProxy(t, po)
}

func startProxy(t testing.TB, po proxytest.Options) *proxytest.Proxy {
	t.Helper()
	px, err := proxytest.Start(po)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Close() })
	return px
}

func TestDialThroughProxy(t *testing.T) {
	for _, endpoint := range []string{hiddenName, "[" + hiddenIPv6 + "]", hiddenIPv6} {
		t.Run(endpoint, func(t *testing.T) {
			const user, pass = "device7", "s3cret:with@odd/chars"
			p, f, px := hiddenBroker(t, proxytest.Options{Username: user, Password: pass})
			logger, logs := debugLogger()
			o := p.options(endpoint, logger)
			o.Proxy = &Proxy{URL: px.URL(), Username: user, Password: pass}
			if endpoint == hiddenIPv6 {
				// Credentials in the URL, as https_proxy carries them.
				o.Proxy = &Proxy{URL: "http://" + url.UserPassword(user, pass).String() + "@" + px.Addr()}
			}
			c, err := Dial(context.Background(), o)
			if err != nil {
				t.Fatalf("Dial through the proxy: %v", err)
			}
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			want := net.JoinHostPort(strings.Trim(endpoint, "[]"), "8883")
			if got := px.Targets(); len(got) != 1 || got[0] != want {
				t.Errorf("proxy saw CONNECT %v, want [%s]", got, want)
			}
			if px.Tunnels() != 1 {
				t.Errorf("proxy opened %d tunnels, want 1", px.Tunnels())
			}
			basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
			if got := px.Authorizations(); len(got) != 1 || got[0] != basic {
				t.Errorf("Proxy-Authorization = %q, want %q", got, basic)
			}
			waitFor(t, func() bool { return slices.Contains(f.rec.snapshot(), "connect") },
				func() string { return fmt.Sprintf("broker saw %v, want a connection", f.rec.snapshot()) })
			if strings.Contains(logs.String(), pass) {
				t.Errorf("the proxy password is in the log:\n%s", logs.String())
			}
			if !strings.Contains(logs.String(), "connecting through proxy") {
				t.Errorf("the log does not say the connection goes through the proxy:\n%s", logs.String())
			}
		})
	}
}

// Without the proxy, the hidden endpoint is out of reach: the tests above
// prove the tunnel, not a lucky resolver.
func TestHiddenEndpointNeedsTheProxy(t *testing.T) {
	p, _, px := hiddenBroker(t, proxytest.Options{})
	o := p.options(hiddenName, nil)
	o.ConnectTimeout = 10 * time.Second
	if c, err := Dial(context.Background(), o); err == nil {
		_ = c.Close()
		t.Fatalf("reached %s without the proxy", hiddenName)
	}
	if n := px.Connects(); n != 0 {
		t.Errorf("proxy saw %d CONNECTs with no proxy configured", n)
	}
}

func TestProbeThroughProxy(t *testing.T) {
	p, _, px := hiddenBroker(t, proxytest.Options{})
	o := probeOptions(t, p, hiddenName)
	o.Proxy = &Proxy{URL: px.URL()}
	// The broker trusts the claim CA, so it completes the handshake.
	active, err := CertificateActive(context.Background(), o)
	if err != nil || !active {
		t.Fatalf("CertificateActive through the proxy = %v, %v; want true, nil", active, err)
	}
	if got := px.Targets(); len(got) != 1 || got[0] != hiddenName+":8883" {
		t.Errorf("proxy saw CONNECT %v, want [%s:8883]", got, hiddenName)
	}
}

// The proxy's refusals: each says what to change, names the proxy by
// host:port only, and is fatal or transient as a retry would fare.
func TestProxyRefusals(t *testing.T) {
	const user, pass = "device7", "pr0xy-pa55"
	tests := []struct {
		name      string
		proxy     proxytest.Options
		user      string
		pass      string
		want      string // after "iotclient: connect to iot.fleetprov.test:8883: proxy HOST:PORT "
		transient bool
	}{
		{"no credentials", proxytest.Options{Username: user, Password: pass}, "", "",
			"wants credentials: set networkProxy.proxy.username/password", false},
		{"wrong password", proxytest.Options{Username: user, Password: pass}, user, "not-" + pass,
			"refused the credentials (407 Proxy Authentication Required): check networkProxy.proxy.username/password", false},
		{"NTLM only", proxytest.Options{Username: user, Password: pass, Challenges: []string{"NTLM", "Negotiate", `Digest realm="x\r\nInjected: 1"`}}, "", "",
			"accepts only NTLM or Negotiate or Digest authentication, and fleetprov sends Basic: allow Basic authentication for this device on the proxy", false},
		{"Basic among others", proxytest.Options{Username: user, Password: pass, Challenges: []string{"Negotiate", `Basic realm="corp"`}}, "", "",
			"wants credentials: set networkProxy.proxy.username/password", false},
		{"forbidden", proxytest.Options{Answer: 403}, "", "",
			"refused to open a tunnel to iot.fleetprov.test:8883 (403 Forbidden): allow it on the proxy, or list the endpoint in networkProxy.noProxyAddresses", false},
		{"bad gateway", proxytest.Options{Answer: 502}, "", "",
			"could not open a tunnel to iot.fleetprov.test:8883 (502 Bad Gateway)", true},
		{"not a tunnel", proxytest.Options{Answer: 405}, "", "",
			"answered CONNECT iot.fleetprov.test:8883 with 405 Method Not Allowed: check that networkProxy.proxy.url names an HTTP proxy", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, f, px := hiddenBroker(t, tc.proxy)
			logger, logs := debugLogger()
			o := p.options(hiddenName, logger)
			// A refusal must end Dial at once, not at its deadline.
			o.ConnectTimeout = time.Minute
			o.Proxy = &Proxy{URL: px.URL(), Username: tc.user, Password: tc.pass}
			start := time.Now()
			c, err := Dial(context.Background(), o)
			if err == nil {
				_ = c.Close()
				t.Fatal("Dial succeeded")
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("Dial took %s: a refusal waited for the deadline", d)
			}
			want := fmt.Sprintf("iotclient: connect to %s:8883: proxy %s %s", hiddenName, px.Addr(), tc.want)
			if err.Error() != want {
				t.Errorf("error:\n got %s\nwant %s", err, want)
			}
			if failure.IsTransient(err) != tc.transient {
				t.Errorf("transient = %v, want %v", failure.IsTransient(err), tc.transient)
			}
			if tc.transient && !errors.Is(err, failure.ErrUnreached) {
				t.Error("a proxy that could not reach the cloud is not marked unreached")
			}
			var perr *ProxyError
			if !errors.As(err, &perr) {
				t.Error("the error is not a *ProxyError")
			}
			if strings.Contains(err.Error()+logs.String(), pass) {
				t.Error("the password appears in the error or the log")
			}
			if px.Connects() < 1 {
				t.Error("the proxy saw no CONNECT")
			}
			if ev := f.rec.snapshot(); len(ev) != 0 {
				t.Errorf("the broker saw %v through a refused tunnel", ev)
			}
		})
	}
}

func TestProxyUnreachableIsTransient(t *testing.T) {
	p, _, _ := hiddenBroker(t, proxytest.Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	o := p.options(hiddenName, nil)
	o.ConnectTimeout = time.Minute
	o.Proxy = &Proxy{URL: "http://" + addr, Username: "u", Password: "hunter2"}
	_, err = Dial(context.Background(), o)
	if err == nil {
		t.Fatal("Dial through a closed proxy port succeeded")
	}
	prefix := fmt.Sprintf("iotclient: connect to %s:8883: connecting to proxy %s: ", hiddenName, addr)
	if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error = %q, want %q and the cause", err, prefix)
	}
	if !failure.IsTransient(err) || !errors.Is(err, failure.ErrUnreached) {
		t.Errorf("error = %v: want transient and unreached", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Error("the password appears in the error")
	}

	po := probeOptions(t, p, hiddenName)
	po.Proxy = o.Proxy
	active, err := CertificateActive(context.Background(), po)
	if active || err == nil || !failure.IsTransient(err) || !errors.Is(err, failure.ErrUnreached) {
		t.Errorf("probe through a closed proxy = %v, %v; want false and a transient, unreached error", active, err)
	}
}

// A "proxy" that answers CONNECT with something other than HTTP is the
// wrong address: fatal, as retrying cannot help.
func TestProxyNotHTTP(t *testing.T) {
	p, _, _ := hiddenBroker(t, proxytest.Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.2" + strings.Repeat("x", 5000) + "\r\n"))
			_ = c.Close()
		}
	}()
	o := p.options(hiddenName, nil)
	o.Proxy = &Proxy{URL: "http://" + l.Addr().String()}
	_, err = Dial(context.Background(), o)
	if err == nil || failure.IsTransient(err) {
		t.Fatalf("Dial = %v; want a fatal error", err)
	}
	want := fmt.Sprintf("iotclient: connect to %s:8883: proxy %s: no answer to CONNECT %s:8883: the answer is not HTTP", hiddenName, l.Addr(), hiddenName)
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error:\n got %s\nwant %s...", err, want)
	}
	if n := len(err.Error()); n > 400 {
		t.Errorf("the error quotes %d bytes of what the other side sent", n)
	}
}

// Loopback endpoints and those the no-proxy list names are reached
// directly; everything else goes through the proxy.
func TestProxyFor(t *testing.T) {
	px := &Proxy{URL: "http://proxy.example.net:3128", NoProxy: ".internal.example, 10.0.0.0/8, fd00::/8, direct.example.com:8883"}
	tests := []struct {
		addr  string
		proxy bool
	}{
		{"iot.example.com:8883", true},
		{"127.0.0.1:8883", false},
		{"[::1]:8883", false},
		{"localhost:8883", false},
		{"iot.internal.example:8883", false},
		{"10.1.2.3:8883", false},
		{"[fd00::5]:8883", false},
		{"[2001:db8::1]:8883", true},
		{"direct.example.com:8883", false},
		{"direct.example.com:443", true},
	}
	for _, tc := range tests {
		u, err := px.proxyFor(tc.addr)
		if err != nil {
			t.Fatalf("proxyFor(%s): %v", tc.addr, err)
		}
		if got := u != nil; got != tc.proxy {
			t.Errorf("proxyFor(%s) = %v, want through the proxy: %v", tc.addr, u, tc.proxy)
		}
	}
	var none *Proxy
	if u, err := none.proxyFor("iot.example.com:8883"); u != nil || err != nil {
		t.Errorf("no proxy: proxyFor = %v, %v", u, err)
	}
	broken := &Proxy{URL: "http://u:hunter2@[::1"}
	if _, err := broken.proxyFor("iot.example.com:8883"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("a proxy URL that does not parse: err = %v; want an error that does not quote it", err)
	}
	bad := &Proxy{URL: "socks5://proxy.example.net:1080"}
	if _, err := bad.proxyFor("iot.example.com:8883"); err == nil || !strings.Contains(err.Error(), `proxy scheme "socks5" is not supported`) {
		t.Errorf("socks5 proxy: err = %v", err)
	}
}

// TLS is checked end to end: a proxy that hands the device to another
// server cannot pass it off as the endpoint.
func TestProxyCannotImpersonateTheEndpoint(t *testing.T) {
	p := newPKI(t)
	p.useServerHosts(t, hiddenName)
	f := startBroker(t, p.serverTLS(t))
	other := newPKI(t) // a server certificate from a CA the device does not trust
	other.useServerHosts(t, hiddenName)
	impostor := startBroker(t, other.serverTLS(t))
	px := startProxy(t, proxytest.Options{Routes: map[string]string{hiddenName + ":8883": impostor.addr}})
	o := p.options(hiddenName, nil)
	o.Proxy = &Proxy{URL: px.URL()}
	_, err := Dial(context.Background(), o)
	if err == nil || failure.IsTransient(err) || !strings.Contains(err.Error(), "does not verify against the root CA") {
		t.Fatalf("Dial to an impostor through the proxy = %v; want a fatal verification error", err)
	}
	if len(f.rec.snapshot()) != 0 || len(impostor.rec.snapshot()) != 0 {
		t.Error("an MQTT session started over an unverified connection")
	}
}

// IPv6 without a proxy: a broker on [::1] and the endpoint written as
// an IPv6 literal, bare, bracketed, and with its port.
func TestDialIPv6Loopback(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		if os.Getenv("FLEETPROV_REQUIRE_TOOLS") == "1" {
			t.Fatalf("this machine has no IPv6 loopback (::1): %v", err)
		}
		t.Skipf("skipping: this machine has no IPv6 loopback (::1): %v", err)
	}
	_ = ln.Close()
	p := newPKI(t)
	p.useServerHosts(t, "::1")
	f := startBroker6(t, p.serverTLS(t))
	_, port, _ := net.SplitHostPort(f.addr)
	for _, o := range []Options{
		p.options("::1", nil), p.options("[::1]", nil), p.options("[::1]:"+port, nil),
	} {
		if o.Endpoint != "[::1]:"+port {
			o.Port = atoiPort(t, port)
		}
		c, err := Dial(context.Background(), o)
		if err != nil {
			t.Fatalf("Dial %s port %d: %v", o.Endpoint, o.Port, err)
		}
		_ = c.Close()
	}
	connects := func() (n int) {
		for _, e := range f.rec.snapshot() {
			if e == "connect" {
				n++
			}
		}
		return n
	}
	waitFor(t, func() bool { return connects() == 3 },
		func() string { return fmt.Sprintf("broker on [::1] saw %d connections, want 3", connects()) })
}

func atoiPort(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// startBroker6 is startBroker listening on [::1].
func startBroker6(t *testing.T, cfg *tls.Config) *fakeAWS {
	t.Helper()
	return startBrokerOn(t, "[::1]:0", cfg)
}

// BenchmarkDialThroughProxy is the claim connection to one broker,
// directly and through the test proxy with credentials: what the tunnel
// adds to TCP, mutual TLS and MQTT CONNECT.
func BenchmarkDialThroughProxy(b *testing.B) {
	p, f, px := hiddenBroker(b, proxytest.Options{Username: "u", Password: "p"})
	b.Run("direct", func(b *testing.B) {
		o := p.options(f.addr, nil)
		for b.Loop() {
			c, err := Dial(context.Background(), o)
			if err != nil {
				b.Fatal(err)
			}
			_ = c.Close()
		}
	})
	b.Run("proxy", func(b *testing.B) {
		o := p.options(hiddenName, nil)
		o.Proxy = &Proxy{URL: px.URL(), Username: "u", Password: "p"}
		for b.Loop() {
			c, err := Dial(context.Background(), o)
			if err != nil {
				b.Fatal(err)
			}
			_ = c.Close()
		}
	})
}
