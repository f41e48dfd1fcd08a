package config

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/internal/childenv"
	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// LoadOptions says where configuration comes from. Layers apply in order:
// the file, then the environment, then the flags the user set.
type LoadOptions struct {
	// Path is the config file. Empty: --config if set in Flags, else
	// FLEETPROV_CONFIG from Environ, else /etc/greengrass/config.yaml.
	Path string
	// Flags is the set RegisterFlags defined on, after parsing; nil for none.
	// Only flags the user set override; other flags in the set are ignored.
	Flags *pflag.FlagSet
	// Environ is os.Environ()-style "NAME=value" pairs; nil means none.
	// Empty values are ignored, as if unset.
	Environ []string
	// SkipFileChecks skips the checks only a provisioning run needs: that
	// the required keys are set and that the claim key, claim certificate
	// and root CA files are readable and well formed. Values present are
	// still validated. For status and reset, and for run to learn whether
	// the device is already provisioned (its claim files may be gone by
	// then) before it calls (*Config).Check.
	SkipFileChecks bool
	// Defaults are a build's own values for fleet_provisioning keys, by
	// key name as in config.yaml ("templateName"): used where the file,
	// the environment and the flags leave the key unset or empty.
	Defaults map[string]any
	// DefaultPath replaces /etc/greengrass/config.yaml as the file read
	// when neither Path, --config nor FLEETPROV_CONFIG names one.
	DefaultPath string
}

// Limits AWS IoT and X.509 put on values.
const (
	// AWS IoT's limit for a provisioning template's name (1-36 of
	// 0-9A-Za-z_-); Greengrass lite allows 128, but a longer name can
	// name no template, and a run would retry against it in vain.
	maxTemplateName = 36
	maxEndpoint     = 128
	maxCommonName   = 64
	maxClientID     = 128
	maxParamName    = paramsource.MaxNameLength
	maxParamValue   = paramsource.MaxValueLength
	// How long AWS IoT honours a certificate ownership token (messages
	// say "1h"): a device that believes longer would resume with a token
	// the cloud refuses.
	maxTokenLifetime = time.Hour
)

var (
	templateNameRE = regexp.MustCompile(`^[0-9A-Za-z_-]+$`)
	// AWS IoT's rule for thing names, with their length (1 to 128)
	// checked apart: a bounded repetition compiles into a program 128
	// times the size, built at every start of fleetprov.
	thingNameRE = regexp.MustCompile(`^[a-zA-Z0-9:_-]+$`)
	// A DNS label as resolvers accept it ('_' included); an endpoint's
	// host is labels joined by dots, or an IP address.
	hostLabelRE = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$`)
)

// origin remembers where values came from, so that messages can name the
// flag or environment variable the user set rather than the file's key.
type origin struct {
	file    string
	sources map[string]string // koanf path -> "flag --x" / "environment variable X"
	present map[string]bool   // koanf path -> the key is in the merged config
	nulls   map[string]int    // koanf path of a section written as null -> its line
}

func (o *origin) subject(key string) string {
	if o == nil {
		return dotted(key)
	}
	if s, ok := o.sources[key]; ok {
		return s
	}
	return "config " + o.file + ": " + dotted(key)
}

func (o *origin) fail(key, format string, args ...any) error {
	return failure.Usage(o.subject(key) + " " + fmt.Sprintf(format, args...))
}

func (o *origin) fromFile(key string) bool {
	if o == nil {
		return true
	}
	_, ok := o.sources[key]
	return !ok
}

// Load reads the config file, applies environment and flag overrides and
// validates everything, so that a run stops before touching anything when
// the configuration is wrong. Every error it returns is a
// *failure.UsageError whose message is one line naming the file and key (or
// the flag or environment variable) at fault and what to do.
func Load(opts LoadOptions) (*Config, error) {
	path := configPath(opts)
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, failure.Usage(fmt.Sprintf("config file %s: %v", path, err))
	}
	b, err := readInput(abs, maxConfigFile)
	if err != nil {
		switch {
		case inputProblem(err) != "":
			return nil, failure.Usage(fmt.Sprintf("config file %s %s: pass --config FILE naming Greengrass's config.yaml", abs, inputProblem(err)))
		case errors.Is(err, fs.ErrNotExist):
			return nil, failure.Usage(fmt.Sprintf("config file %s not found: pass --config FILE or create it", abs))
		case errors.Is(err, fs.ErrPermission):
			return nil, failure.Usage(fmt.Sprintf("config file %s cannot be read (permission denied): run as a user that can read it", abs))
		}
		return nil, failure.Usage(fmt.Sprintf("config file %s cannot be read (%s): pass --config FILE naming Greengrass's config.yaml", abs, errText(err)))
	}
	tree, err := parseYAML(b)
	if err != nil {
		var md *multiDocError
		if errors.As(err, &md) {
			return nil, failure.Usage(fmt.Sprintf("config %s %s", abs, md))
		}
		var se *sectionError
		if errors.As(err, &se) {
			return nil, failure.Usage(fmt.Sprintf("config %s: %s", abs, se))
		}
		return nil, failure.Usage(fmt.Sprintf("config %s is not valid YAML: %s: fix the file", abs, err))
	}
	nulls, err := checkSections(b)
	if err != nil {
		return nil, failure.Usage(fmt.Sprintf("config %s: %s", abs, err))
	}

	o := &origin{file: abs, sources: map[string]string{}, present: map[string]bool{}, nulls: nulls}
	k := koanf.New("/")
	if err := k.Load(mapProvider(tree), nil); err != nil {
		return nil, failure.Usage(fmt.Sprintf("config %s: %v", abs, err))
	}
	envKeys := map[string]string{}
	for _, key := range provisionKeys {
		envKeys[key.Env] = key.Path()
	}
	environ := opts.Environ
	err = k.Load(env.Provider("/", env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, value string) (string, any) {
			key := envKeys[name]
			if key == "" || value == "" {
				return "", nil
			}
			o.sources[key] = "environment variable " + name
			return key, value
		},
	}), nil)
	if err != nil {
		return nil, failure.Usage(fmt.Sprintf("environment: %v", err))
	}
	if fs := opts.Flags; fs != nil {
		if a, b := fs.Lookup("output-dir"), fs.Lookup("out-cert-path"); a != nil && b != nil && a.Changed && b.Changed {
			return nil, failure.Usage("flags --output-dir and --out-cert-path both set the output directory: pass only one")
		}
		err := k.Load(posflag.ProviderWithFlag(fs, "/", nil, func(f *pflag.Flag) (string, any) {
			key := flagKey(f.Name)
			if key == "" || !f.Changed {
				return "", nil
			}
			name := "--" + f.Name
			if f.Shorthand != "" {
				name = "-" + f.Shorthand + "/--" + f.Name
			}
			o.sources[key] = "flag " + name
			return key, f.Value.String()
		}), nil)
		if err != nil {
			return nil, failure.Usage(fmt.Sprintf("flags: %v", err))
		}
	}
	if err := applyDefaults(k, o, opts.Defaults); err != nil {
		return nil, err
	}
	for _, key := range k.Keys() {
		o.present[key] = true
		// A parent of a flattened key (templateParams of a YAML map) is
		// present too.
		for i := strings.LastIndex(key, "/"); i > 0; i = strings.LastIndex(key[:i], "/") {
			o.present[key[:i]] = true
		}
	}

	l := &loader{k: k, o: o, dir: filepath.Dir(abs), env: opts.Environ}
	cfg := l.build()
	if l.err != nil {
		return nil, l.err
	}
	if err := cfg.CheckPaths(); err != nil {
		return nil, err
	}
	if !opts.SkipFileChecks {
		if err := cfg.Check(); err != nil {
			return nil, err
		}
	}
	// A PIN or password the keys read from the environment stays out of
	// the commands this process starts (scripts, restart, sources).
	childenv.HideSecretsOf(cfg.KeyURI, cfg.ClaimKeyPath)
	return cfg, nil
}

// applyDefaults sets a build's defaults where nothing else set the key.
func applyDefaults(k *koanf.Koanf, o *origin, defaults map[string]any) error {
	names := make([]string, 0, len(defaults))
	for name := range defaults {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		known := false
		for _, key := range provisionKeys {
			known = known || key.Name == name
		}
		if !known {
			// A mistake in the build, not in the device's config.
			return fmt.Errorf("build default %q is not a key of the fleet_provisioning configuration (see docs/configuration.md)", name)
		}
		path := ProvisionPrefix + name
		if v := k.Get(path); v != nil && fmt.Sprint(v) != "" {
			continue
		}
		if err := k.Set(path, defaults[name]); err != nil {
			return fmt.Errorf("build default %q: %w", name, err)
		}
		o.sources[path] = "this build's default for " + name
	}
	return nil
}

// mapProvider hands koanf the already parsed file.
type mapProvider map[string]any

func (m mapProvider) ReadBytes() ([]byte, error) { return nil, errors.New("not supported") }
func (m mapProvider) Read() (map[string]any, error) {
	return map[string]any(m), nil
}

// loader turns the merged koanf tree into a Config, keeping the first
// error: one line is all a user is shown, and the first is the one to fix.
type loader struct {
	k   *koanf.Koanf
	o   *origin
	dir string
	env []string // the environment, for the proxy variables
	err error
}

func (l *loader) fail(key, format string, args ...any) {
	if l.err == nil {
		l.err = l.o.fail(key, format, args...)
	}
}

// str is the key's value as a single string ("" when unset or null).
func (l *loader) str(key string) string {
	switch v := l.k.Get(key).(type) {
	case nil:
		return ""
	case string:
		if strings.ContainsRune(v, 0) {
			// YAML's "\0" can write one; no path, name, host or command
			// can hold one, and the system call would only refuse it
			// once the run has begun.
			l.fail(key, "%q holds a NUL byte: remove it", v)
			return ""
		}
		return v
	case []any:
		l.fail(key, "is a list: write a single value")
	case map[string]any:
		l.fail(key, "is a mapping: write a single value")
	default:
		return fmt.Sprint(v)
	}
	return ""
}

func (l *loader) strOr(key, def string) string {
	if v := l.str(key); v != "" {
		return v
	}
	return def
}

// path resolves a relative path from the file against the file's
// directory, and one from a flag or the environment against the working
// directory.
func (l *loader) path(key, def string) string {
	v := l.str(key)
	if v == "" {
		return def
	}
	if !l.plainPath(key, v) {
		return def
	}
	if filepath.IsAbs(v) {
		return filepath.Clean(v)
	}
	if l.o.fromFile(key) {
		return filepath.Join(l.dir, v)
	}
	if a, err := filepath.Abs(v); err == nil {
		return a
	}
	return v
}

// plainPath refuses a path holding PEM text or a line break. A key pasted
// where its file belongs would otherwise become a file name, printed by
// every message and written into config.yaml and the journal; so the
// message does not quote it.
func (l *loader) plainPath(key, v string) bool {
	if strings.Contains(v, "-----BEGIN") || strings.ContainsAny(v, "\r\n") {
		l.fail(key, "holds PEM text or a line break, not a file path: write the content into a file (mode 0600 for a key) and give that file's path")
		return false
	}
	return true
}

// systemPath reads one of the paths (or key URIs) Greengrass keeps in
// system, as it is: fleetprov writes them; it only checks them.
func (l *loader) systemPath(key string) string {
	if v := l.str(key); l.plainPath(key, v) {
		return v
	}
	return ""
}

func (l *loader) duration(key string, def time.Duration, allowZero bool) time.Duration {
	v := strings.TrimSpace(l.str(key))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		l.fail(key, "%q is not a duration: write it like 30s, 5m or 1h", v)
		return def
	}
	if d < 0 || (d == 0 && !allowZero) {
		l.fail(key, "%q must be longer than zero: write it like 30s, 5m or 1h", v)
		return def
	}
	return d
}

// boolean reads true or false: a YAML boolean, or the words from the
// environment or a flag.
func (l *loader) boolean(key string, def bool) bool {
	switch v := l.k.Get(key).(type) {
	case nil:
		return def
	case bool:
		return v
	}
	v := strings.TrimSpace(l.str(key))
	switch strings.ToLower(v) {
	case "":
		return def
	case "true":
		return true
	case "false":
		return false
	}
	l.fail(key, "%s is not true or false: write true or false", shownValue(v))
	return def
}

func (l *loader) build() *Config {
	c := &Config{File: l.o.file, origin: l.o}
	const fp = ProvisionPrefix

	c.RootPath = l.path(SystemPrefix+"rootPath", filepath.Clean(DefaultRootPath))
	c.ThingName = l.str(SystemPrefix + "thingName")
	c.CertificateFilePath = l.systemPath(SystemPrefix + "certificateFilePath")
	c.PrivateKeyPath = l.systemPath(SystemPrefix + "privateKeyPath")
	c.SystemRootCAPath = l.systemPath(SystemPrefix + "rootCaPath")

	c.AWSRegion = l.str(NucleusPrefix + "awsRegion")
	c.IoTRoleAlias = l.str(NucleusPrefix + "iotRoleAlias")
	c.PosixUser = l.str(NucleusPrefix + "runWithDefault/posixUser")
	if c.PosixUser != "" {
		parts := strings.Split(c.PosixUser, ":")
		if len(parts) > 2 || parts[0] == "" || (len(parts) == 2 && parts[1] == "") {
			l.fail(NucleusPrefix+"runWithDefault/posixUser", "%q is not user or user:group: write it like ggcore:ggcore", c.PosixUser)
		}
	}

	c.ClaimCertPath = l.path(fp+"claimCertPath", "")
	if v := strings.TrimSpace(l.str(fp + "claimKeyPath")); strings.HasPrefix(v, "tpm:") && tpmHandleForm(v) == v {
		// tpm: alone is the key fleetprov makes; the claim key comes
		// with its certificate and must be in the TPM already.
		l.fail(fp+"claimKeyPath", "%q names no handle: the claim key must already be in the TPM: name its handle (handle:0x81000000 or tpm:handle=0x81000000)", v)
	} else if IsKeyURI(v) {
		c.ClaimKeyPath = l.keyURI(fp+"claimKeyPath", v) // a key in a token or a TPM
	} else {
		c.ClaimKeyPath = l.path(fp+"claimKeyPath", "")
	}
	c.RootCAPath = l.path(fp+"rootCaPath", "")

	c.TemplateName = l.str(fp + "templateName")
	if n := utf8.RuneCountInString(c.TemplateName); n > maxTemplateName {
		l.fail(fp+"templateName", "is %d characters long; a template name may have at most %d: shorten it", n, maxTemplateName)
	} else if c.TemplateName != "" && !templateNameRE.MatchString(c.TemplateName) {
		l.fail(fp+"templateName", "%q is not a valid template name: use only letters, digits, '_' and '-'", c.TemplateName)
	}
	c.TemplateParams, c.ParamSources = l.templateParams(fp + "templateParams")

	port := 0
	c.IoTDataEndpoint = strings.TrimSpace(l.str(fp + "iotDataEndpoint"))
	if c.IoTDataEndpoint != "" {
		c.IoTDataHost, port = l.endpoint(fp+"iotDataEndpoint", c.IoTDataEndpoint)
	}
	c.IoTCredEndpoint = strings.TrimSpace(l.str(fp + "iotCredEndpoint"))
	if c.IoTCredEndpoint != "" {
		l.endpoint(fp+"iotCredEndpoint", c.IoTCredEndpoint)
	}

	c.CSRCommonName = l.strOr(fp+"csrCommonName", DefaultCSRCommonName)
	if n := utf8.RuneCountInString(c.CSRCommonName); n > maxCommonName {
		l.fail(fp+"csrCommonName", "is %d characters long; a certificate's common name may have at most %d: shorten it", n, maxCommonName)
	}

	c.OutputDir = l.path(fp+"outputDir", filepath.Clean(DefaultOutputDir))
	c.CSRPath = l.path(fp+"csrPath", filepath.Join(c.OutputDir, CSRFileName))
	c.CertPath = l.path(fp+"certPath", filepath.Join(c.OutputDir, CertFileName))
	c.KeyPath, c.KeyURI = l.keyPath(fp+"keyPath", filepath.Join(c.OutputDir, KeyFileName))
	c.RootCAOutPath = filepath.Join(c.OutputDir, RootCAFileName)

	c.KeyAlgorithm = strings.ToLower(strings.TrimSpace(l.strOr(fp+"keyAlgorithm", DefaultKeyAlgorithm)))
	switch c.KeyAlgorithm {
	case KeyECP256, KeyECP384, KeyRSA2048, KeyRSA3072:
	default:
		l.fail(fp+"keyAlgorithm", "%q is not a key algorithm: use %s, %s, %s or %s", c.KeyAlgorithm, KeyECP256, KeyECP384, KeyRSA2048, KeyRSA3072)
	}
	c.JournalPath = l.path(fp+"journalPath", filepath.Join(c.RootPath, "fleetprov", "journal"))

	c.PayloadFormat = strings.ToLower(strings.TrimSpace(l.strOr(fp+"payloadFormat", DefaultPayloadFormat)))
	switch c.PayloadFormat {
	case FormatJSON, FormatCBOR:
	default:
		l.fail(fp+"payloadFormat", "%q is not a payload format: use %s or %s", c.PayloadFormat, FormatJSON, FormatCBOR)
	}
	c.CertificateMode = strings.ToLower(strings.TrimSpace(l.strOr(fp+"certificateMode", DefaultCertificateMode)))
	switch c.CertificateMode {
	case ModeCSR:
	case ModeCreateKeys:
		if c.KeyPath == "" && l.err == nil {
			l.fail(fp+"certificateMode", "is %s, where the cloud makes the key and sends it to the device, but keyPath names a key in a token, which cannot take a key made elsewhere: use certificateMode %s", ModeCreateKeys, ModeCSR)
		}
	default:
		l.fail(fp+"certificateMode", "%q is not a certificate mode: use %s (the key never leaves the device) or %s (the cloud makes the key)", c.CertificateMode, ModeCSR, ModeCreateKeys)
	}
	c.MQTTALPN = strings.TrimSpace(l.str(fp + "mqttAlpn"))

	c.MQTTPort = DefaultMQTTPort
	if v := strings.TrimSpace(l.str(fp + "mqttPort")); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			l.fail(fp+"mqttPort", "%q is not a port number: use 1 to 65535", v)
		} else {
			c.MQTTPort = p
		}
	}
	if port != 0 {
		c.MQTTPort = port // the endpoint's own port wins
	}
	l.networkProxy(c)
	c.ClientID = l.str(fp + "clientId")
	if n := len(c.ClientID); n > maxClientID {
		l.fail(fp+"clientId", "is %d bytes long; AWS IoT accepts client ids of at most %d: shorten it or leave it empty for a random one", n, maxClientID)
	}

	c.RequestTimeout = l.duration(fp+"requestTimeout", DefaultRequestTimeout, false)
	c.ConnectTimeout = l.duration(fp+"connectTimeout", DefaultConnectTimeout, false)
	c.RetryDeadline = l.duration(fp+"retryDeadline", DefaultRetryDeadline, false)
	c.TokenLifetime = l.duration(fp+"tokenLifetime", DefaultTokenLifetime, false)
	if c.TokenLifetime > maxTokenLifetime {
		l.fail(fp+"tokenLifetime", "(%s) is longer than the 1h AWS IoT honours a certificate ownership token: set it to 1h or less", c.TokenLifetime)
	}
	c.TokenMargin = l.duration(fp+"tokenMargin", DefaultTokenMargin, true)
	if l.err == nil && c.TokenMargin >= c.TokenLifetime {
		l.fail(fp+"tokenMargin", "(%s) is not shorter than tokenLifetime (%s): make it shorter, or no token could ever be reused", c.TokenMargin, c.TokenLifetime)
	}

	c.Verify = l.boolean(fp+"verify", true)
	c.RetireClaim = l.boolean(fp+"retireClaim", false)
	if c.RetireClaim && !c.Verify {
		l.fail(fp+"retireClaim", "is true while verify is false: the claim is retired only once the new certificate is seen to connect; set verify to true, or retireClaim to false")
	}
	if c.RetireClaim && (IsKeyURI(c.ClaimKeyPath) || strings.HasPrefix(c.ClaimKeyPath, "handle:")) {
		// A key in a token is no file to overwrite, and deleting only
		// the certificate would leave a claim that looks retired and is
		// not.
		l.fail(fp+"retireClaim", "is true, but claimKeyPath names a key in a token, which fleetprov cannot overwrite and delete like a file: set retireClaim to false and delete the claim key with the token's own tools once the device is provisioned")
	}
	c.RestartStrategy = strings.ToLower(strings.TrimSpace(l.strOr(fp+"restartStrategy", DefaultRestartStrategy)))
	switch c.RestartStrategy {
	case RestartSystemd, RestartCommand, RestartNone:
	default:
		l.fail(fp+"restartStrategy", "%q is not a restart strategy: use %s, %s or %s", c.RestartStrategy, RestartSystemd, RestartCommand, RestartNone)
	}
	c.RestartUnits = l.units(fp + "restartUnits")
	if c.RestartStrategy == RestartSystemd && len(c.RestartUnits) == 0 {
		l.fail(fp+"restartUnits", "is empty: list the systemd units to restart, or set restartStrategy to none")
	}
	c.RestartCommand = strings.TrimSpace(l.str(fp + "restartCommand"))
	if c.RestartStrategy == RestartCommand && c.RestartCommand == "" {
		l.fail(fp+"restartCommand", "is missing: restartStrategy is command, so set restartCommand to the command that restarts Greengrass")
	}
	c.SystemctlPath = l.strOr(fp+"systemctlPath", DefaultSystemctlPath)
	c.PluginDir = l.path(fp+"pluginDir", DefaultPluginDir)
	c.Plugins = l.plugins(fp+"plugins", c.PluginDir)
	c.StateScriptsDir = l.path(fp+"stateScriptsDir", "")
	c.StateScriptTimeout = l.duration(fp+"stateScriptTimeout", DefaultStateScriptTimeout, false)

	c.Warnings = l.unknownKeys()
	if n := len(c.GreengrassKeyPath()); c.KeyPath == "" && n > maxGreengrassKeyPath {
		c.Warnings = append(c.Warnings, fmt.Sprintf("%s is %d bytes long; Greengrass nucleus lite's deployment service (ggdeploymentd, v2.6) reads system.privateKeyPath into %d bytes and fails on a longer one: shorten the labels or paths in the URI", l.o.subject(fp+"keyPath"), n, maxGreengrassKeyPath))
	}
	return c
}

// maxGreengrassKeyPath is the longest system.privateKeyPath every
// Greengrass nucleus lite daemon can read (ggdeploymentd keeps it in a
// 128-byte buffer with its terminating NUL). Key files never come close;
// a pkcs11: URI can.
const maxGreengrassKeyPath = 127

// keyPath reads the device key's location: a file path (the file key
// store, as Greengrass lite has it), or a pkcs11: URI naming a key in a
// PKCS#11 token. Greengrass lite's keyPath already takes a value that is
// not a path (handle:0x... for a TPM key), and whatever is here is what
// ends up in system.privateKeyPath, so one setting names the key for both
// programs. It returns the path ("" for a token key) and the key URI.
func (l *loader) keyPath(key, def string) (string, string) {
	v := strings.TrimSpace(l.str(key))
	if !IsKeyURI(v) {
		p := l.path(key, def)
		return p, keystore.FileURI(p)
	}
	return "", l.keyURI(key, v)
}

// IsKeyURI tells a key held by a key store other than files, named by its
// URI (pkcs11:..., or plugin:NAME/... for a key store plugin), from a key
// file's path.
func IsKeyURI(v string) bool {
	// handle:0x... is how Greengrass lite names a TPM key; tpm: is ours.
	for _, p := range []string{"pkcs11:", "plugin:", "handle:", "tpm:"} {
		if strings.HasPrefix(v, p) {
			return true
		}
	}
	// A scheme a build registered in-process (keystore.Register) names a
	// key in its store; file: stays a path, as Greengrass writes it.
	scheme, _, ok := strings.Cut(v, ":")
	return ok && scheme != "file" && slices.Contains(keystore.Schemes(), scheme)
}

// GreengrassKeyPath is what Greengrass finds in system.privateKeyPath once
// provisioned: the key file's path, or the key's URI when it lives in a
// token (Greengrass nucleus lite loads either through OpenSSL's
// OSSL_STORE). A key a plugin serves, plugin:NAME/KEY, gives KEY when KEY
// is a URI of its own (plugin:pkcs11/pkcs11:token=...): "plugin:NAME/"
// only tells fleetprov which plugin to ask, and means nothing to
// Greengrass.
func (c *Config) GreengrassKeyPath() string {
	if c.KeyPath != "" {
		return c.KeyPath
	}
	if rest, ok := strings.CutPrefix(c.KeyURI, "plugin:"); ok {
		if _, key, ok := strings.Cut(rest, "/"); ok && IsKeyURI(key) {
			return key
		}
	}
	return tpmHandleForm(c.KeyURI)
}

// tpmHandleForm turns fleetprov's name for a TPM key,
// tpm:handle=0x81000010?..., into the one Greengrass nucleus lite's OpenSSL
// provider reads, handle:0x81000010. Anything else is returned as it is.
func tpmHandleForm(uri string) string {
	rest, ok := strings.CutPrefix(uri, "tpm:")
	if !ok {
		return uri
	}
	rest, _, _ = strings.Cut(rest, "?")
	for _, attr := range strings.Split(rest, ";") {
		if h, ok := strings.CutPrefix(attr, "handle="); ok {
			return "handle:" + h
		}
	}
	return uri
}

// keyURI returns a key URI as written, refusing one that holds a PIN: key
// URIs go into the journal and config.yaml. The message does not quote the
// value, which holds the PIN.
func (l *loader) keyURI(key, v string) string {
	_, query, _ := strings.Cut(v, "?")
	for _, a := range strings.Split(query, "&") {
		name, val, _ := strings.Cut(a, "=")
		if strings.EqualFold(name, "pin-value") {
			l.fail(key, "holds pin-value: the PIN must not be written in config; put it in a file only the provisioning user can read and name that file with pin-source=file:/path")
			return ""
		}
		// The PIN itself written as its source would be quoted by every
		// message about the URI, journaled and shown by status.
		if src, err := url.QueryUnescape(val); strings.EqualFold(name, "pin-source") && (err != nil || !strings.HasPrefix(src, "file:") && !strings.HasPrefix(src, "env:")) {
			l.fail(key, "holds a pin-source that is neither file:/path nor env:VARIABLE (not shown: it may be the PIN itself): put the PIN in a file only the provisioning user can read and name that file with pin-source=file:/path")
			return ""
		}
	}
	return v
}

// KeyError reports a problem with a key URI as a usage error naming the
// fleet_provisioning key (keyPath, claimKeyPath) where it was set: the
// file, a flag or the environment.
func (c *Config) KeyError(name string, err error) error {
	return c.origin.fail(ProvisionPrefix+name, "%v", err)
}

// endpoint checks "host" or "host:port" and returns the host and the port
// (0 when none is given).
func (l *loader) endpoint(key, v string) (string, int) {
	if n := utf8.RuneCountInString(v); n > maxEndpoint {
		l.fail(key, "is %d characters long; an endpoint may have at most %d: check the value", n, maxEndpoint)
		return v, 0
	}
	notHost := func() (string, int) {
		l.fail(key, "%q is not a host name: write only the host (or host:port), e.g. xxxx-ats.iot.us-east-1.amazonaws.com", v)
		return v, 0
	}
	if strings.Contains(v, "://") || strings.ContainsAny(v, "/ \t") {
		return notHost()
	}
	// An IPv6 address without a port, in brackets. A bare one is refused
	// below: "::1:8883" may mean ::1 port 8883 or the address itself.
	if strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]") {
		if ip := net.ParseIP(v[1 : len(v)-1]); ip != nil && strings.Contains(v, ":") {
			return ip.String(), 0
		}
	}
	if !strings.Contains(v, ":") {
		if !isHost(v) {
			return notHost()
		}
		return v, 0
	}
	host, ps, err := net.SplitHostPort(v)
	p, perr := strconv.Atoi(ps)
	if err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
		l.fail(key, "%q is not host or host:port: write e.g. xxxx-ats.iot.us-east-1.amazonaws.com or [::1]:8883", v)
		return v, 0
	}
	if !isHost(host) {
		return notHost()
	}
	return host, p
}

// isHost says whether s can name a host to connect to: an IP address or
// a DNS name. Anything else would only fail later, at each connection
// attempt, as a lookup error the retries cannot fix.
func isHost(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if !hostLabelRE.MatchString(label) {
			return false
		}
	}
	return true
}

// templateParams accepts a YAML map (Greengrass lite today) or a string
// holding a JSON object (its older releases, and the -p flag). A plain
// value becomes a string; a value that is a mapping names the source the
// value comes from ({source: mac, interface: eth0}); a list is an error.
func (l *loader) templateParams(key string) (map[string]string, []paramsource.Spec) {
	out := map[string]string{}
	var specs []paramsource.Spec
	fix := `write it as a YAML map or a JSON object such as {"SerialNumber": "X"}`
	var m map[string]any
	switch v := l.k.Get(key).(type) {
	case nil:
		return out, nil
	case map[string]any:
		m = v
	case string:
		if strings.TrimSpace(v) == "" {
			return out, nil
		}
		dec := json.NewDecoder(strings.NewReader(v))
		dec.UseNumber()
		var j any
		if err := dec.Decode(&j); err != nil {
			l.fail(key, "is not a JSON object (%v): %s", err, fix)
			return out, nil
		}
		if _, err := dec.Token(); err != io.EOF {
			l.fail(key, "has text after the JSON object: %s", fix)
			return out, nil
		}
		var ok bool
		if m, ok = j.(map[string]any); !ok {
			l.fail(key, "is a JSON %s, not an object: %s", jsonKind(j), fix)
			return out, nil
		}
	case []any:
		l.fail(key, "is a list: %s", fix)
		return out, nil
	default:
		l.fail(key, "is neither a map nor a JSON object: %s", fix)
		return out, nil
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if c := utf8.RuneCountInString(n); c > maxParamName {
			l.fail(key, "has a parameter name %d characters long (starting %q); AWS IoT accepts names of at most %d: shorten it", c, truncate(n, 16), maxParamName)
			return out, nil
		}
		if pv, ok := m[n].(string); ok {
			if c := utf8.RuneCountInString(pv); c > maxParamValue {
				if l.err == nil {
					l.err = failure.Usage(fmt.Sprintf("%s is %d characters long; AWS IoT accepts parameter values of at most %d: shorten it", l.o.paramSubject(key, n), c, maxParamValue))
				}
				return out, nil
			}
		}
		switch pv := m[n].(type) {
		case nil:
			out[n] = ""
		case string:
			out[n] = pv
		case json.Number:
			out[n] = pv.String()
		case bool:
			out[n] = strconv.FormatBool(pv)
		case map[string]any:
			s, err := paramsource.ParseSpec(n, pv)
			if err != nil {
				l.failParam(key, n, err)
				return out, nil
			}
			specs = append(specs, s)
		default:
			l.fail(key, "parameter %q is a %s: write a value, or a mapping naming its source such as {source: mac}", n, jsonKind(pv))
			return out, nil
		}
	}
	return out, specs
}

// failParam reports a problem with one template parameter: by its key
// when it came from the file, else as a parameter of the flag or
// environment variable that set templateParams.
func (l *loader) failParam(key, name string, err error) {
	if l.err == nil {
		l.err = failure.Usage(l.o.paramSubject(key, name) + ": " + err.Error())
	}
}

func (o *origin) paramSubject(key, name string) string {
	if o.fromFile(key) {
		return o.subject(key + "/" + name)
	}
	return fmt.Sprintf("%s parameter %q", o.subject(key), name)
}

// CheckParamPlugins checks that every plugin:NAME source names a plugin
// plugins knows. It starts none: the lookup only finds them.
func (c *Config) CheckParamPlugins(plugins paramsource.PluginLookup) error {
	for _, s := range c.ParamSources {
		if !strings.HasPrefix(s.Source, paramsource.PluginPrefix) {
			continue
		}
		if _, err := s.Open(nil, plugins); err != nil {
			return failure.Usage(c.origin.paramSubject(ProvisionPrefix+"templateParams", s.Param) + ": source " + s.Source + ": " + err.Error())
		}
	}
	return nil
}

// shownValue quotes a value for a one-line message: control characters
// escaped, a long value cut.
func shownValue(s string) string { return strconv.Quote(truncate(s, 64)) }

// truncate returns s's first n characters, for a message.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "..."
}

func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "list"
	case map[string]any:
		return "mapping"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// units reads restartUnits: a YAML list, or a string of names separated by
// commas or spaces (the form an environment variable can carry).
func (l *loader) units(key string) []string {
	switch v := l.k.Get(key).(type) {
	case nil:
		return []string{DefaultRestartUnit}
	case string:
		return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	case []any:
		out := make([]string, 0, len(v))
		for i, item := range v {
			s, ok := item.(string)
			if !ok || strings.TrimSpace(s) == "" {
				l.fail(key, "item %d is not a unit name: list unit names such as greengrass-lite.target", i+1)
				return nil
			}
			out = append(out, strings.TrimSpace(s))
		}
		return out
	}
	l.fail(key, "is a mapping: list unit names such as greengrass-lite.target")
	return nil
}

// unknownKeys warns about keys under the fleet_provisioning configuration
// that nothing reads: most likely typos that would otherwise be ignored.
func (l *loader) unknownKeys() []string {
	known := map[string]bool{}
	lower := map[string]string{}
	for _, k := range provisionKeys {
		known[k.Name] = true
		lower[strings.ToLower(k.Name)] = k.Name
	}
	for _, k := range fileOnlyKeys {
		known[k] = true
		lower[strings.ToLower(k)] = k
	}
	seen := map[string]bool{}
	var out []string
	for _, key := range l.k.Keys() {
		rest, ok := strings.CutPrefix(key, ProvisionPrefix)
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, "/")
		if known[name] || seen[name] {
			continue
		}
		seen[name] = true
		msg := l.o.subject(ProvisionPrefix+name) + " is not a key fleetprov reads; it is ignored"
		if s, ok := lower[strings.ToLower(name)]; ok {
			msg += " (did you mean " + s + "?)"
		}
		out = append(out, msg)
	}
	sort.Strings(out)
	return out
}

// Check verifies what a provisioning run needs beyond well-formed values:
// the required keys are set, and the claim key, claim certificate and root
// CA are readable PEM files, the key matching the certificate. Load calls it
// unless LoadOptions.SkipFileChecks is set. It reads files but changes nothing; the
// key's content never appears in a message.
func (c *Config) Check() error {
	o := c.origin
	for _, r := range []struct{ key, val, what string }{
		{"claimCertPath", c.ClaimCertPath, "the claim certificate's PEM file"},
		{"claimKeyPath", c.ClaimKeyPath, "the claim private key's PEM file"},
		{"rootCaPath", c.RootCAPath, "the root CA certificate's PEM file (AmazonRootCA1.pem)"},
		{"templateName", c.TemplateName, "the provisioning template's name"},
		{"iotDataEndpoint", c.IoTDataEndpoint, "the AWS IoT data endpoint (aws iot describe-endpoint --endpoint-type iot:Data-ATS)"},
	} {
		if r.val != "" {
			continue
		}
		key := ProvisionPrefix + r.key
		if err := o.nullSection(key); err != nil {
			return err
		}
		state := "is missing"
		if o != nil && o.present[key] {
			state = "is empty"
		}
		hint := ""
		for _, k := range provisionKeys {
			if k.Name == r.key && len(k.Flags) > 0 {
				hint = ", or pass --" + k.Flags[0]
			}
		}
		return failure.Usage(fmt.Sprintf("%s %s: set it to %s%s", o.subject(key), state, r.what, hint))
	}
	if c.ThingName != "" && (len(c.ThingName) > 128 || !thingNameRE.MatchString(c.ThingName)) {
		// Provisioning writes it; one that AWS IoT cannot have was written
		// by hand or by an older fleetprov, and Greengrass would build its
		// MQTT topics from it.
		return o.fail(SystemPrefix+"thingName", "%s is not a thing name AWS IoT accepts (1 to 128 of a-z, A-Z, 0-9, ':', '_' and '-'): leave it empty, provisioning sets it", shownValue(c.ThingName))
	}
	return c.checkFiles()
}

// nullSection reports the outermost section above key that the file
// writes as null: the key is missing because the section is empty, and
// the section is what to fix.
func (o *origin) nullSection(key string) error {
	if o == nil || !o.fromFile(key) {
		return nil
	}
	for i := strings.Index(key, "/"); i > 0; i = nextSlash(key, i) {
		if line, ok := o.nulls[key[:i]]; ok {
			_, name := filepath.Split(key)
			return failure.Usage(fmt.Sprintf("config %s: %s (line %d) is empty (null), not a mapping, so %s is missing: write the section's keys indented under it", o.file, dotted(key[:i]), line, name))
		}
	}
	return nil
}

func nextSlash(s string, i int) int {
	if j := strings.Index(s[i+1:], "/"); j >= 0 {
		return i + 1 + j
	}
	return -1
}

func (c *Config) checkFiles() error {
	o := c.origin
	keyKey := ProvisionPrefix + "claimKeyPath"
	certKey := ProvisionPrefix + "claimCertPath"
	caKey := ProvisionPrefix + "rootCaPath"
	// A claim key in a token is checked against the certificate when the
	// claim connection is made: reading it needs its key store.
	var keyPub crypto.PublicKey
	if !IsKeyURI(c.ClaimKeyPath) {
		b, err := readInput(c.ClaimKeyPath, maxPEMFile)
		if err != nil {
			return o.fail(keyKey, "%s %s: %s", c.ClaimKeyPath, readProblem(err), readFix(err, "the claim private key's PEM file"))
		}
		var problem string
		keyPub, problem = parsePrivateKeyPEM(b)
		clear(b)
		if problem != "" {
			return o.fail(keyKey, "%s %s: set it to the claim private key's unencrypted PEM file", c.ClaimKeyPath, problem)
		}
	}

	b, err := readInput(c.ClaimCertPath, maxPEMFile)
	if err != nil {
		return o.fail(certKey, "%s %s: %s", c.ClaimCertPath, readProblem(err), readFix(err, "the claim certificate's PEM file"))
	}
	certs := parseCertsPEM(b)
	if len(certs) == 0 {
		return o.fail(certKey, "%s is not a PEM certificate: set it to the claim certificate's PEM file", c.ClaimCertPath)
	}
	if eq, ok := certs[0].PublicKey.(interface{ Equal(x crypto.PublicKey) bool }); keyPub != nil && (!ok || !eq.Equal(keyPub)) {
		return o.fail(keyKey, "%s does not belong to the claim certificate %s (their public keys differ): use the key the claim certificate was issued for", c.ClaimKeyPath, c.ClaimCertPath)
	}
	now := time.Now()
	if na := certs[0].NotAfter; now.After(na) {
		// AWS IoT refuses it at every connection; a run would only write
		// a key and a journal, then fail.
		return o.fail(certKey, "%s expired on %s (this device's clock says %s): put a claim certificate that is still valid there, or set the clock if it is wrong", c.ClaimCertPath, na.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}

	b, err = readInput(c.RootCAPath, maxPEMFile)
	if err != nil {
		return o.fail(caKey, "%s %s: %s", c.RootCAPath, readProblem(err), readFix(err, "the root CA certificate's PEM file (AmazonRootCA1.pem)"))
	}
	cas := parseCertsPEM(b)
	if len(cas) == 0 {
		return o.fail(caKey, "%s is not a PEM certificate: set it to the root CA certificate's PEM file (AmazonRootCA1.pem)", c.RootCAPath)
	}
	if !slices.ContainsFunc(cas, isCA) {
		// Most likely the claim or a device certificate in the wrong key:
		// no server certificate would verify against it.
		return o.fail(caKey, "%s holds no CA certificate (its first is issued to %q by %q): set it to the root CA certificate's PEM file (AmazonRootCA1.pem)", c.RootCAPath, cas[0].Subject.String(), cas[0].Issuer.String())
	}
	return c.CheckStateScriptsDir()
}

// CheckStateScriptsDir verifies that stateScriptsDir, if set, is a
// directory fleetprov can list. Check calls it; a run calls it also on a
// provisioned device, whose resumed states still run their scripts.
func (c *Config) CheckStateScriptsDir() error {
	if c.StateScriptsDir == "" {
		return nil
	}
	key := ProvisionPrefix + "stateScriptsDir"
	fi, err := os.Stat(c.StateScriptsDir)
	if err == nil && !fi.IsDir() {
		return c.origin.fail(key, "%s is not a directory: set it to the directory that holds the state scripts", c.StateScriptsDir)
	}
	if err == nil {
		_, err = os.ReadDir(c.StateScriptsDir)
	}
	if err != nil {
		fix := "create it, or remove the key to run no state scripts"
		if errors.Is(err, fs.ErrPermission) {
			fix = "run as a user that can read it"
		}
		return c.origin.fail(key, "%s %s: %s", c.StateScriptsDir, readProblem(err), fix)
	}
	return nil
}

func readProblem(err error) string {
	if p := inputProblem(err); p != "" {
		return p
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "does not exist"
	case errors.Is(err, fs.ErrPermission):
		return "cannot be read (permission denied)"
	}
	return "cannot be read (" + errText(err) + ")"
}

func readFix(err error, what string) string {
	if errors.Is(err, fs.ErrPermission) {
		return "run as a user that can read it"
	}
	return "set it to " + what
}

// errText is an error without the path a *PathError repeats.
func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
