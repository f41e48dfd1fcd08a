package config

import (
	"strings"
	"unicode"
)

// EnvPrefix starts every environment variable fleetprov reads. The CLI
// reads EnvPrefix+"CONFIG" itself (the config file's path); every other
// variable overrides one key of the fleet_provisioning configuration.
const EnvPrefix = "FLEETPROV_"

// EnvConfig names the config file when --config is not given.
const EnvConfig = EnvPrefix + "CONFIG"

// Key describes one key of the aws.greengrass.fleet_provisioning
// configuration that can be overridden from the environment (and maybe a
// flag).
type Key struct {
	Name  string // as in config.yaml, e.g. templateName
	Env   string // FLEETPROV_ + UPPER_SNAKE of Name
	Flags []string
}

// Path is the key's koanf path ("/"-delimited).
func (k Key) Path() string { return ProvisionPrefix + k.Name }

// provisionKeys lists, in documentation order, the fleet_provisioning keys
// fleetprov reads: Greengrass lite's first, then fleetprov's own. Flags are
// long names as registered by RegisterFlags.
var provisionKeys = []Key{
	{Name: "claimCertPath", Flags: []string{"claim-cert"}},
	{Name: "claimKeyPath", Flags: []string{"claim-key"}},
	{Name: "rootCaPath", Flags: []string{"root-ca-path"}},
	{Name: "templateName", Flags: []string{"template-name"}},
	{Name: "templateParams", Flags: []string{"template-params"}},
	{Name: "iotDataEndpoint", Flags: []string{"endpoint"}},
	{Name: "iotCredEndpoint"},
	{Name: "csrCommonName"},
	{Name: "csrPath"},
	{Name: "certPath"},
	{Name: "keyPath"},
	{Name: "outputDir", Flags: []string{"output-dir", "out-cert-path"}},
	{Name: "keyAlgorithm"},
	{Name: "payloadFormat"},
	{Name: "certificateMode"},
	{Name: "mqttAlpn"},
	{Name: "journalPath"},
	{Name: "mqttPort"},
	{Name: "clientId"},
	{Name: "requestTimeout"},
	{Name: "connectTimeout"},
	{Name: "retryDeadline"},
	{Name: "tokenLifetime"},
	{Name: "tokenMargin"},
	{Name: "verify"},
	{Name: "retireClaim"},
	{Name: "restartStrategy"},
	{Name: "restartUnits"},
	{Name: "restartCommand"},
	{Name: "systemctlPath"},
	{Name: "pluginDir"},
	{Name: "stateScriptsDir"},
	{Name: "stateScriptTimeout"},
}

func init() {
	for i := range provisionKeys {
		provisionKeys[i].Env = EnvPrefix + upperSnake(provisionKeys[i].Name)
	}
}

// Keys returns the fleet_provisioning keys that have environment (and
// flag) overrides, in documentation order.
func Keys() []Key {
	out := make([]Key, len(provisionKeys))
	for i, k := range provisionKeys {
		out[i] = k
		out[i].Flags = append([]string(nil), k.Flags...)
	}
	return out
}

// upperSnake turns a camelCase config key into UPPER_SNAKE:
// iotDataEndpoint -> IOT_DATA_ENDPOINT, clientId -> CLIENT_ID.
func upperSnake(s string) string {
	var b strings.Builder
	rs := []rune(s)
	for i, r := range rs {
		if i > 0 && unicode.IsUpper(r) && !unicode.IsUpper(rs[i-1]) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// dotted spells a koanf path the way users see keys in docs and messages:
// services.aws.greengrass.fleet_provisioning.configuration.templateName.
func dotted(path string) string { return strings.ReplaceAll(path, "/", ".") }
