package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/fleetprov/fleetprov/internal/proxytest"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// The proxies scripts started, by script and name.
var (
	proxiesMu sync.Mutex
	proxies   = map[*testscript.TestScript]map[string]*proxytest.Proxy{}
)

// proxy NAME [user=U] [pass=P] [answer=STATUS] [listen=ADDR] [route=TARGET>ADDR]...:
// starts an HTTP CONNECT proxy in the test process for the rest of the
// script and sets NAME_URL (http://host:port) and NAME_ADDR. A route sends
// a CONNECT to TARGET to ADDR instead.
func cmdProxy(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 {
		ts.Fatalf("usage: proxy NAME [user=U] [pass=P] [answer=STATUS] [listen=ADDR] [route=TARGET>ADDR]...")
	}
	o := proxytest.Options{Routes: map[string]string{}}
	for _, a := range args[1:] {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "user":
			o.Username = v
		case "pass":
			o.Password = v
		case "listen":
			o.Listen = v
		case "answer":
			n, err := strconv.Atoi(v)
			ts.Check(err)
			o.Answer = n
		case "route":
			from, to, ok := strings.Cut(v, ">")
			if !ok {
				ts.Fatalf("route %q: want TARGET>ADDR", v)
			}
			o.Routes[from] = to
		default:
			ts.Fatalf("proxy: unknown option %q", a)
		}
	}
	px, err := proxytest.Start(o)
	ts.Check(err)
	ts.Defer(func() { _ = px.Close() })
	proxiesMu.Lock()
	if proxies[ts] == nil {
		proxies[ts] = map[string]*proxytest.Proxy{}
		ts.Defer(func() {
			proxiesMu.Lock()
			delete(proxies, ts)
			proxiesMu.Unlock()
		})
	}
	proxies[ts][args[0]] = px
	proxiesMu.Unlock()
	ts.Setenv(args[0]+"_URL", px.URL())
	ts.Setenv(args[0]+"_ADDR", px.Addr())
}

// proxysaw NAME connects=N | connects>=N | tunnels=N | only=TARGET: what the
// proxy NAME saw so far; only= says every CONNECT asked for TARGET.
func cmdProxySaw(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: proxysaw NAME connects=N|connects>=N|tunnels=N|only=TARGET...")
	}
	proxiesMu.Lock()
	px := proxies[ts][args[0]]
	proxiesMu.Unlock()
	if px == nil {
		ts.Fatalf("no proxy %s", args[0])
	}
	for _, a := range args[1:] {
		atLeast := strings.Contains(a, ">=")
		k, v, _ := strings.Cut(strings.Replace(a, ">=", "=", 1), "=")
		var got int
		switch k {
		case "connects":
			got = px.Connects()
		case "tunnels":
			got = px.Tunnels()
		case "only":
			targets := px.Targets()
			if len(targets) == 0 {
				ts.Fatalf("proxy %s saw no CONNECT", args[0])
			}
			for _, t := range targets {
				if t != v {
					ts.Fatalf("proxy %s saw CONNECT %s, want only %s (all: %v)", args[0], t, v, targets)
				}
			}
			continue
		default:
			ts.Fatalf("proxysaw: unknown check %q", a)
		}
		want, err := strconv.Atoi(v)
		ts.Check(err)
		if (atLeast && got < want) || (!atLeast && got != want) {
			ts.Fatalf("proxy %s: %s is %d (targets %v)", args[0], a, got, px.Targets())
		}
	}
}

// netproxy CONFIG [url=U] [user=U] [pass=P] [noproxy=LIST]: writes a
// networkProxy section into the NucleusLite configuration of CONFIG, a
// config.yaml as `cloud init` writes it.
func cmdNetProxy(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 {
		ts.Fatalf("usage: netproxy CONFIG [url=U] [user=U] [pass=P] [noproxy=LIST]")
	}
	var proxy, top []string
	for _, a := range args[1:] {
		k, v, _ := strings.Cut(a, "=")
		q := strconv.Quote(v)
		switch k {
		case "url":
			proxy = append(proxy, "          url: "+q)
		case "user":
			proxy = append(proxy, "          username: "+q)
		case "pass":
			proxy = append(proxy, "          password: "+q)
		case "noproxy":
			top = append(top, "        noProxyAddresses: "+q)
		default:
			ts.Fatalf("netproxy: unknown key %q", a)
		}
	}
	block := "      networkProxy:\n"
	for _, l := range top {
		block += l + "\n"
	}
	if len(proxy) > 0 {
		block += "        proxy:\n" + strings.Join(proxy, "\n") + "\n"
	}
	path := ts.MkAbs(args[0])
	b, err := os.ReadFile(path)
	ts.Check(err)
	const anchor = "    componentType: \"NUCLEUS\"\n    configuration:\n"
	if !strings.Contains(string(b), anchor) {
		ts.Fatalf("%s has no NucleusLite configuration", path)
	}
	ts.Check(os.WriteFile(path, []byte(strings.Replace(string(b), anchor, anchor+block, 1)), 0o644))
}

// servercert DIR HOST...: replaces the local cloud's server certificate in
// DIR with one from its CA for HOSTs (names or IP addresses).
func cmdServerCert(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: servercert DIR HOST...")
	}
	dir := ts.MkAbs(args[0])
	ca, err := readCert(filepath.Join(dir, "ca.pem"))
	ts.Check(err)
	caKeyPEM, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	ts.Check(err)
	caKey, err := keystore.ParsePrivateKeyPEM(caKeyPEM, "ca.key")
	ts.Check(err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ts.Check(err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: args[1]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range args[1:] {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	ts.Check(err)
	k, err := x509.MarshalPKCS8PrivateKey(key)
	ts.Check(err)
	ts.Check(os.WriteFile(filepath.Join(dir, "server.pem.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	ts.Check(os.WriteFile(filepath.Join(dir, "server.pem.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}), 0o600))
}

// certsan CERT HOST...: the PEM certificate CERT names each HOST (a DNS
// name or an IP address) among its subject alternative names.
func cmdCertSAN(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: certsan CERT HOST...")
	}
	cert, err := readCert(ts.MkAbs(args[0]))
	ts.Check(err)
	for _, h := range args[1:] {
		if err := cert.VerifyHostname(h); err != nil {
			ts.Fatalf("%s does not name %s: DNS names %v, IP addresses %v", args[0], h, cert.DNSNames, cert.IPAddresses)
		}
	}
}

// hostAddr is an IPv4 address of this machine that is not a loopback
// one, and can be listened on; "" if there is none.
func hostAddr() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ipn.IP.String(), "0"))
		if err != nil {
			continue
		}
		_ = l.Close()
		return ipn.IP.String()
	}
	return ""
}

func haveIPv6Loopback() bool {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// netCondition answers the conditions "ipv6" (this machine has ::1) and
// "hostaddr" (it has an IPv4 address besides loopback). Without one, a
// script skips, unless FLEETPROV_REQUIRE_TOOLS=1 makes it fail.
func netCondition(cond string) (bool, error) {
	var ok bool
	var what string
	switch cond {
	case "ipv6":
		ok, what = haveIPv6Loopback(), "an IPv6 loopback (::1)"
	case "hostaddr":
		ok, what = hostAddr() != "", "an IPv4 address besides loopback"
	default:
		return false, fmt.Errorf("unknown condition %q", cond)
	}
	if !ok && os.Getenv("FLEETPROV_REQUIRE_TOOLS") == "1" {
		return false, fmt.Errorf("this machine has no %s, and FLEETPROV_REQUIRE_TOOLS=1", what)
	}
	return ok, nil
}

// hostaddr VAR [PORTVAR]: sets VAR to host:port, a free port on an IPv4
// address of this machine that is not loopback (so it is reached without
// a proxy only when no_proxy says so), and PORTVAR to its port and
// VAR_HOST to its host. Guard with [hostaddr].
func cmdHostAddr(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: hostaddr VAR PORTVAR")
	}
	host := hostAddr()
	if host == "" {
		ts.Fatalf("no IPv4 address besides loopback: guard the script with [!hostaddr] skip")
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	ts.Check(err)
	addr := l.Addr().String()
	ts.Check(l.Close())
	_, port, _ := net.SplitHostPort(addr)
	ts.Setenv(args[0], addr)
	ts.Setenv(args[0]+"_HOST", host)
	ts.Setenv(args[1], port)
}

// freeport6 VAR PORTVAR: a free address on the IPv6 loopback, [::1]:PORT.
// Guard with [ipv6].
func cmdFreePort6(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: freeport6 VAR PORTVAR")
	}
	l, err := net.Listen("tcp", "[::1]:0")
	ts.Check(err)
	addr := l.Addr().String()
	ts.Check(l.Close())
	_, port, _ := net.SplitHostPort(addr)
	ts.Setenv(args[0], addr)
	ts.Setenv(args[1], port)
}
