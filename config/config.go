// Package config reads Greengrass nucleus lite's config.yaml, with
// environment and flag overrides, into one validated Config, and writes the
// provisioned values back into that file without losing its comments.
package config

import (
	"time"

	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// Config keys as they appear in config.yaml. Greengrass service names contain
// dots, so koanf runs with "/" as its delimiter and every key path is spelled
// with "/".
const (
	SystemPrefix    = "system/"
	NucleusPrefix   = "services/aws.greengrass.NucleusLite/configuration/"
	ProvisionPrefix = "services/aws.greengrass.fleet_provisioning/configuration/"
)

// Restart strategies.
const (
	RestartSystemd = "systemd"
	RestartCommand = "command"
	RestartNone    = "none"
)

// Payload formats accepted by payloadFormat: the last segment of the
// provisioning topics.
const (
	FormatJSON = "json"
	FormatCBOR = "cbor"
)

// Certificate modes accepted by certificateMode.
const (
	// ModeCSR: the device makes its key and sends a CSR
	// (CreateCertificateFromCsr). The private key never leaves the device.
	ModeCSR = "csr"
	// ModeCreateKeys: the cloud makes the key pair and sends the private key
	// back (CreateKeysAndCertificate).
	ModeCreateKeys = "create-keys"
)

// Key algorithms accepted by keyAlgorithm.
const (
	KeyECP256  = "ecdsa-p256"
	KeyECP384  = "ecdsa-p384"
	KeyRSA2048 = "rsa-2048"
	KeyRSA3072 = "rsa-3072"
)

// Config is everything one provisioning run needs, validated. Paths are
// absolute or as written in the file; durations are parsed.
type Config struct {
	// File is the config.yaml this was read from; provisioned values are
	// written back into it.
	File string

	// system.*
	RootPath            string // system.rootPath, default /var/lib/greengrass/
	ThingName           string // system.thingName (set once provisioned)
	CertificateFilePath string // system.certificateFilePath (set once provisioned)
	PrivateKeyPath      string // system.privateKeyPath (set once provisioned)
	SystemRootCAPath    string // system.rootCaPath (set once provisioned)

	// aws.greengrass.NucleusLite configuration
	AWSRegion    string // awsRegion
	IoTRoleAlias string // iotRoleAlias
	PosixUser    string // runWithDefault.posixUser, "user[:group]"

	// networkProxy (NucleusLite configuration), or HTTPS_PROXY and
	// NO_PROXY from the environment when it names no proxy url.
	ProxyURL      string // http://host[:port], without credentials; "" = connect directly
	ProxyUsername string // networkProxy.proxy.username, or the URL's
	ProxyPassword string // networkProxy.proxy.password, or the URL's; never shown
	NoProxy       string // noProxyAddresses (or NO_PROXY): comma-separated hosts reached directly
	ProxyFrom     string // where ProxyURL came from, for messages

	// aws.greengrass.fleet_provisioning configuration: Greengrass lite's keys
	IoTDataEndpoint string             // iotDataEndpoint (host, or host:port)
	IoTDataHost     string             // IoTDataEndpoint's host: without the port, if it named one
	IoTCredEndpoint string             // iotCredEndpoint
	RootCAPath      string             // rootCaPath
	ClaimCertPath   string             // claimCertPath
	ClaimKeyPath    string             // claimKeyPath
	TemplateName    string             // templateName
	TemplateParams  map[string]string  // templateParams: YAML map or JSON string; the plain values
	ParamSources    []paramsource.Spec // templateParams values that name a source, by parameter name
	CSRCommonName   string             // csrCommonName, default aws-greengrass-nucleus-lite
	CSRPath         string             // csrPath, default OutputDir/cert_req.pem
	CertPath        string             // certPath, default OutputDir/certificate.pem
	KeyPath         string             // keyPath, default OutputDir/priv_key; "" when keyPath names a key in a token
	// KeyURI names the device key in its key store: file:<KeyPath>, or
	// keyPath itself when that is a key URI of another store
	// (pkcs11:token=...;object=...), written as given.
	KeyURI string

	// aws.greengrass.fleet_provisioning configuration: fleetprov's own keys
	OutputDir       string        // outputDir, default /var/lib/greengrass/credentials/
	RootCAOutPath   string        // where the root CA is copied: OutputDir/AmazonRootCA.pem
	KeyAlgorithm    string        // keyAlgorithm: ecdsa-p256 (default), ecdsa-p384, rsa-2048, rsa-3072
	PayloadFormat   string        // payloadFormat: json (default) or cbor
	CertificateMode string        // certificateMode: csr (default) or create-keys
	MQTTALPN        string        // mqttAlpn: "" = x-amzn-mqtt-ca on port 443 only; "none"; or a protocol name
	JournalPath     string        // journalPath, default <rootPath>/fleetprov/journal
	MQTTPort        int           // mqttPort, default 8883 (unless the endpoint names a port)
	ClientID        string        // clientId, default a random UUID per connection
	RequestTimeout  time.Duration // requestTimeout, default 30s: one request/response
	ConnectTimeout  time.Duration // connectTimeout, default 30s: one connection attempt
	RetryDeadline   time.Duration // retryDeadline, default 5m: total time a step may spend retrying
	TokenLifetime   time.Duration // tokenLifetime, default 1h: how long the cloud honours a token
	TokenMargin     time.Duration // tokenMargin, default 5m: a token older than lifetime-margin is not reused
	Verify          bool          // verify, default true: connect once with the new certificate, client id = thing name, before Restart
	RetireClaim     bool          // retireClaim, default false: once verified, delete the claim certificate and key files
	RestartStrategy string        // restartStrategy: systemd (default), command, none
	RestartUnits    []string      // restartUnits, default [greengrass-lite.target]
	RestartCommand  string        // restartCommand, run with /bin/sh -c
	SystemctlPath   string        // systemctlPath, default systemctl
	PluginDir       string        // pluginDir, default /usr/lib/fleetprov/plugins: where plugins named without a path live
	Plugins         []Plugin      // plugins: go-plugin binaries (see plugins.go)

	// State scripts (docs/hooks.md)
	StateScriptsDir    string        // stateScriptsDir: "" = none
	StateScriptTimeout time.Duration // stateScriptTimeout, default 30s: one script

	// Warnings are things worth telling the user that do not stop a run,
	// such as an unknown key under the fleet_provisioning configuration
	// (most likely a typo, which Greengrass lite would silently ignore).
	Warnings []string

	// origin names where each value came from, so that Check can name the
	// flag or environment variable at fault rather than the file's key.
	origin *origin
}

// Defaults. Paths derived from others (csrPath, certPath, keyPath, the
// root CA copy and journalPath) are computed in Load from outputDir and
// system.rootPath.
const (
	DefaultPath            = "/etc/greengrass/config.yaml"
	DefaultRootPath        = "/var/lib/greengrass/"
	DefaultOutputDir       = "/var/lib/greengrass/credentials/"
	DefaultCSRCommonName   = "aws-greengrass-nucleus-lite"
	DefaultKeyAlgorithm    = KeyECP256
	DefaultPayloadFormat   = FormatJSON
	DefaultCertificateMode = ModeCSR
	DefaultMQTTPort        = 8883
	DefaultRequestTimeout  = 30 * time.Second
	DefaultConnectTimeout  = 30 * time.Second
	DefaultRetryDeadline   = 5 * time.Minute
	DefaultTokenLifetime   = time.Hour
	DefaultTokenMargin     = 5 * time.Minute
	DefaultRestartStrategy = RestartSystemd
	DefaultRestartUnit     = "greengrass-lite.target"
	DefaultSystemctlPath   = "systemctl"

	// File names inside outputDir, as Greengrass lite names them.
	CSRFileName    = "cert_req.pem"
	CertFileName   = "certificate.pem"
	KeyFileName    = "priv_key"
	RootCAFileName = "AmazonRootCA.pem"
)

// DefaultStateScriptTimeout bounds one state script when
// stateScriptTimeout is not set.
const DefaultStateScriptTimeout = 30 * time.Second
