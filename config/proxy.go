package config

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/fleetprov/fleetprov/failure"
)

// Greengrass's networkProxy settings, under the NucleusLite configuration
// as the Greengrass nucleus keeps them under its own.
const (
	ProxyPrefix      = NucleusPrefix + "networkProxy/"
	keyProxyURL      = ProxyPrefix + "proxy/url"
	keyProxyUsername = ProxyPrefix + "proxy/username"
	keyProxyPassword = ProxyPrefix + "proxy/password"
	keyNoProxy       = ProxyPrefix + "noProxyAddresses"
)

// The environment variables read when the config names no proxy. Each is
// looked up in capitals first, as curl and Go's own HTTP client do.
var (
	envHTTPSProxy = []string{"HTTPS_PROXY", "https_proxy"}
	envNoProxy    = []string{"NO_PROXY", "no_proxy"}
)

// proxyExample is how messages show a proxy URL.
const proxyExample = "http://proxy.example.com:3128"

// networkProxy reads the proxy from networkProxy, or from the environment
// when networkProxy has no url. The username and password keys apply to
// either; they win over credentials written in the URL.
func (l *loader) networkProxy(c *Config) {
	environ := l.env
	raw := strings.TrimSpace(l.str(keyProxyURL))
	subject := l.o.subject(keyProxyURL)
	noProxy := l.noProxy(keyNoProxy)
	from := dotted(keyProxyURL)
	if raw == "" {
		name, v := firstEnv(environ, envHTTPSProxy)
		if v == "" {
			return
		}
		raw, subject, from = strings.TrimSpace(v), "environment variable "+name, "environment variable "+name
		_, noProxy = firstEnv(environ, envNoProxy)
	}
	u, user, pass, why := parseProxyURL(raw)
	if why != "" {
		if l.err == nil {
			l.err = failure.Usage(subject + " " + why)
		}
		return
	}
	c.ProxyURL, c.ProxyUsername, c.ProxyPassword, c.NoProxy, c.ProxyFrom = u, user, pass, noProxy, from
	if v := l.str(keyProxyUsername); v != "" {
		c.ProxyUsername = v
	}
	if v := l.str(keyProxyPassword); v != "" {
		c.ProxyPassword = v
	}
}

// noProxy reads noProxyAddresses: a comma-separated string, as Greengrass
// writes it, or a YAML list.
func (l *loader) noProxy(key string) string {
	list, ok := l.k.Get(key).([]any)
	if !ok {
		return strings.TrimSpace(l.str(key))
	}
	parts := make([]string, 0, len(list))
	for _, v := range list {
		s, ok := v.(string)
		if !ok {
			l.fail(key, "holds %v, which is not a host: list host names, IP addresses or CIDR ranges", v)
			return ""
		}
		parts = append(parts, strings.TrimSpace(s))
	}
	return strings.Join(parts, ",")
}

// parseProxyURL checks a proxy URL and splits off its credentials. why,
// when not empty, says what is wrong; it never quotes a password.
func parseProxyURL(raw string) (clean, user, pass, why string) {
	if !strings.Contains(raw, "://") {
		// As curl reads a proxy given without a scheme.
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url's message quotes the input, password and all.
		return "", "", "", "is not a URL: write it like " + proxyExample
	}
	shown := strconv.Quote(u.Redacted())
	switch scheme := strings.ToLower(u.Scheme); scheme {
	case "http":
	case "https":
		return "", "", "", fmt.Sprintf("%s is an https:// proxy, which fleetprov does not support: use the proxy's http:// address (the connection to AWS IoT inside the tunnel is TLS all the same)", shown)
	default:
		return "", "", "", fmt.Sprintf("%s uses scheme %s, which fleetprov does not support: use an http:// proxy (fleetprov tunnels through it with CONNECT)", shown, strconv.Quote(scheme))
	}
	if u.Hostname() == "" {
		return "", "", "", fmt.Sprintf("%s has no host: write it like %s", shown, proxyExample)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", "", "", fmt.Sprintf("%s: port %s is not a number from 1 to 65535", shown, strconv.Quote(p))
		}
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", "", "", fmt.Sprintf("%s has a path or query; a proxy URL is only scheme://host:port: write it like %s", shown, proxyExample)
	}
	if !isHost(u.Hostname()) {
		return "", "", "", fmt.Sprintf("%s: %s is not a host name or IP address: write it like %s", shown, strconv.Quote(u.Hostname()), proxyExample)
	}
	if u.User != nil {
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	host := u.Hostname()
	if u.Port() != "" {
		host = net.JoinHostPort(host, u.Port())
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return "http://" + host, user, pass, ""
}

// firstEnv returns the first of names set to a non-empty value, and it.
func firstEnv(environ []string, names []string) (string, string) {
	for _, name := range names {
		if v, _ := lookupEnv(environ, name); v != "" {
			return name, v
		}
	}
	return "", ""
}
