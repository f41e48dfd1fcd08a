package config

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/failure"
)

// withProxy puts networkProxy YAML (indented for its place) into the
// NucleusLite configuration of a config written by fp.
func withProxy(doc, networkProxy string) string {
	const anchor = "        posixUser: \"ggcore:ggcore\"\n"
	return strings.Replace(doc, anchor, anchor+"      networkProxy:\n"+networkProxy, 1)
}

func loadProxyConfig(t *testing.T, networkProxy string, environ ...string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	p := newPKI(t, dir)
	doc := fp(dir, goodKeys(p))
	if networkProxy != "" {
		doc = withProxy(doc, networkProxy)
	}
	path := writeFile(t, filepath.Join(dir, "config.yaml"), doc)
	return Load(LoadOptions{Path: path, Environ: environ})
}

func TestNetworkProxy(t *testing.T) {
	tests := []struct {
		name         string
		yaml         string
		env          []string
		url, user    string
		pass, noProx string
		from         string
	}{
		{name: "none"},
		{
			name: "Greengrass keys",
			yaml: "        noProxyAddresses: \"10.0.0.0/8,.corp.example\"\n        proxy:\n          url: \"http://proxy.corp.example:3128\"\n          username: \"Mary_Major\"\n          password: \"pass@word1357\"\n",
			url:  "http://proxy.corp.example:3128", user: "Mary_Major", pass: "pass@word1357", noProx: "10.0.0.0/8,.corp.example",
			from: "services.aws.greengrass.NucleusLite.configuration.networkProxy.proxy.url",
		},
		{
			name: "credentials in the URL, no port, no scheme",
			yaml: "        proxy:\n          url: \"u1:p%40ss@proxy.corp.example\"\n",
			url:  "http://proxy.corp.example", user: "u1", pass: "p@ss",
			from: "services.aws.greengrass.NucleusLite.configuration.networkProxy.proxy.url",
		},
		{
			name: "keys win over the URL's credentials; a YAML list of no-proxy hosts",
			yaml: "        noProxyAddresses: [\"a.example\", \"fd00::/8\"]\n        proxy:\n          url: \"http://u1:p1@[fd00::3128]:3128\"\n          username: \"u2\"\n          password: \"p2\"\n",
			url:  "http://[fd00::3128]:3128", user: "u2", pass: "p2", noProx: "a.example,fd00::/8",
			from: "services.aws.greengrass.NucleusLite.configuration.networkProxy.proxy.url",
		},
		{
			name: "the environment when the config names no proxy",
			env:  []string{"https_proxy=http://envuser:envpass@10.1.1.1:8080", "no_proxy=.internal"},
			url:  "http://10.1.1.1:8080", user: "envuser", pass: "envpass", noProx: ".internal",
			from: "environment variable https_proxy",
		},
		{
			name: "capitals first",
			env:  []string{"https_proxy=http://lower:1", "HTTPS_PROXY=upper:2", "NO_PROXY=x.example"},
			url:  "http://upper:2", noProx: "x.example",
			from: "environment variable HTTPS_PROXY",
		},
		{
			name: "the config wins over the environment, its no-proxy list too",
			yaml: "        proxy:\n          url: \"http://cfg.example:3128\"\n",
			env:  []string{"HTTPS_PROXY=http://env.example:8080", "NO_PROXY=env.example"},
			url:  "http://cfg.example:3128",
			from: "services.aws.greengrass.NucleusLite.configuration.networkProxy.proxy.url",
		},
		{
			name: "credentials from the config for the environment's proxy",
			yaml: "        proxy:\n          username: \"u3\"\n          password: \"p3\"\n",
			env:  []string{"HTTPS_PROXY=http://env.example:8080"},
			url:  "http://env.example:8080", user: "u3", pass: "p3",
			from: "environment variable HTTPS_PROXY",
		},
		{
			name: "http_proxy alone is not for TLS",
			env:  []string{"http_proxy=http://env.example:8080"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadProxyConfig(t, tc.yaml, tc.env...)
			if err != nil {
				t.Fatal(err)
			}
			got := []string{c.ProxyURL, c.ProxyUsername, c.ProxyPassword, c.NoProxy, c.ProxyFrom}
			want := []string{tc.url, tc.user, tc.pass, tc.noProx, tc.from}
			for i, field := range []string{"ProxyURL", "ProxyUsername", "ProxyPassword", "NoProxy", "ProxyFrom"} {
				if got[i] != want[i] {
					t.Errorf("%s = %q, want %q", field, got[i], want[i])
				}
			}
		})
	}
}

// Each bad proxy setting stops the load with one line naming the key (or
// the variable) and what to write, never the password.
func TestNetworkProxyErrors(t *testing.T) {
	const key = "services.aws.greengrass.NucleusLite.configuration.networkProxy.proxy.url"
	tests := []struct {
		name string
		yaml string
		env  []string
		want string // after "config FILE: " for a key, or whole for a variable
	}{
		{
			name: "socks5",
			yaml: "        proxy:\n          url: \"socks5://user:hunter2@proxy.example:1080\"\n",
			want: key + ` "socks5://user:xxxxx@proxy.example:1080" uses scheme "socks5", which fleetprov does not support: use an http:// proxy (fleetprov tunnels through it with CONNECT)`,
		},
		{
			name: "https",
			yaml: "        proxy:\n          url: \"https://proxy.example:443\"\n",
			want: key + ` "https://proxy.example:443" is an https:// proxy, which fleetprov does not support: use the proxy's http:// address (the connection to AWS IoT inside the tunnel is TLS all the same)`,
		},
		{
			name: "no host",
			yaml: "        proxy:\n          url: \"http://:3128\"\n",
			want: key + ` "http://:3128" has no host: write it like http://proxy.example.com:3128`,
		},
		{
			name: "bad port",
			yaml: "        proxy:\n          url: \"http://proxy.example:99999\"\n",
			want: key + ` "http://proxy.example:99999": port "99999" is not a number from 1 to 65535`,
		},
		{
			name: "a path",
			yaml: "        proxy:\n          url: \"http://proxy.example:3128/pac\"\n",
			want: key + ` "http://proxy.example:3128/pac" has a path or query; a proxy URL is only scheme://host:port: write it like http://proxy.example.com:3128`,
		},
		{
			name: "not a URL",
			yaml: "        proxy:\n          url: \"http://us er:hunter2@proxy example:3128\"\n",
			want: key + ` is not a URL: write it like http://proxy.example.com:3128`,
		},
		{
			name: "noProxyAddresses holds a mapping",
			yaml: "        noProxyAddresses: [{a: b}]\n",
			want: `services.aws.greengrass.NucleusLite.configuration.networkProxy.noProxyAddresses holds map[a:b], which is not a host: list host names, IP addresses or CIDR ranges`,
		},
		{
			name: "the environment",
			env:  []string{"HTTPS_PROXY=socks5h://user:hunter2@proxy.example:1080"},
			want: `environment variable HTTPS_PROXY "socks5h://user:xxxxx@proxy.example:1080" uses scheme "socks5h", which fleetprov does not support: use an http:// proxy (fleetprov tunnels through it with CONNECT)`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadProxyConfig(t, tc.yaml, tc.env...)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if !failure.IsUsage(err) {
				t.Errorf("not a usage error: %v", err)
			}
			msg := err.Error()
			if tc.yaml != "" {
				_, after, ok := strings.Cut(msg, "config.yaml: ")
				if !ok {
					t.Fatalf("error does not name the file: %s", msg)
				}
				msg = after
			}
			if msg != tc.want {
				t.Errorf("error:\n got %s\nwant %s", msg, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "\n") {
				t.Errorf("error shows the password or runs over one line: %s", err)
			}
		})
	}
}

// An IPv6 endpoint may be written in brackets without a port, mqttPort
// giving the port: the way `cloud init --listen [::1]:PORT` writes it. A
// bare one is refused, as "::1:8883" could mean either.
func TestIPv6EndpointWithoutPort(t *testing.T) {
	for _, v := range []string{`"[::1]"`, `"[fd00:0::2]"`} {
		c, _ := load(t, map[string]string{"iotDataEndpoint": v, "mqttPort": "18884"}, nil)
		want := "::1"
		if strings.Contains(v, "fd00") {
			want = "fd00::2"
		}
		if c.IoTDataHost != want || c.MQTTPort != 18884 {
			t.Errorf("%s: host %q port %d, want %q 18884", v, c.IoTDataHost, c.MQTTPort, want)
		}
	}
	for _, v := range []string{"::1", "[::1", "fd00::2"} {
		dir := t.TempDir()
		keys := goodKeys(newPKI(t, dir))
		keys["iotDataEndpoint"] = strconv.Quote(v)
		_, err := Load(LoadOptions{Path: writeFile(t, filepath.Join(dir, "config.yaml"), fp(dir, keys))})
		want := "iotDataEndpoint " + strconv.Quote(v) + " is not host or host:port: write e.g. xxxx-ats.iot.us-east-1.amazonaws.com or [::1]:8883"
		if err == nil || !strings.HasSuffix(err.Error(), want) {
			t.Errorf("%s: err = %v, want ...%s", v, err, want)
		}
	}
}
