package config

import (
	"strings"

	"github.com/spf13/pflag"
)

// FlagConfig is the flag naming the config file.
const FlagConfig = "config"

// RegisterFlags defines on fs Greengrass nucleus lite's fleet-provisioning
// flags (each overrides the config key of the same meaning) and --config.
// Values may be attached (-k/p, --claim-key=/p) or separated (-k /p).
//
// It also installs a name normaliser that reads "_" as "-", so the older
// --out_cert_path spelling works. The normaliser wraps any the set already
// had; a cobra global normalisation function set later would replace it.
func RegisterFlags(fs *pflag.FlagSet) {
	prev := fs.GetNormalizeFunc()
	fs.SetNormalizeFunc(func(f *pflag.FlagSet, name string) pflag.NormalizedName {
		return prev(f, strings.ReplaceAll(name, "_", "-"))
	})
	fs.String(FlagConfig, DefaultPath, "Greengrass config.yaml to read and update (env "+EnvConfig+")")
	fs.StringP("claim-key", "k", "", "claim private key, PEM file (claimKeyPath)")
	fs.StringP("claim-cert", "c", "", "claim certificate, PEM file (claimCertPath)")
	fs.StringP("template-name", "t", "", "provisioning template name (templateName)")
	fs.StringP("template-params", "p", "", `template parameters as a JSON object, e.g. '{"SerialNumber":"X"}' (templateParams)`)
	fs.StringP("endpoint", "e", "", "AWS IoT data endpoint, host or host:port (iotDataEndpoint)")
	fs.StringP("root-ca-path", "r", "", "root CA certificate, PEM file (rootCaPath)")
	fs.StringP("output-dir", "o", "", "directory for the new key, CSR, certificate and root CA copy (outputDir)")
	fs.String("out-cert-path", "", "older name of --output-dir; --out_cert_path also works")
	_ = fs.MarkHidden("out-cert-path")
}

// flagKey maps a (normalised) flag name onto the koanf path it overrides.
func flagKey(name string) string {
	for _, k := range provisionKeys {
		for _, f := range k.Flags {
			if f == name {
				return k.Path()
			}
		}
	}
	return ""
}

// configPath picks the config file: an explicit path, then --config if
// the user set it, then FLEETPROV_CONFIG, then --config's default.
func configPath(opts LoadOptions) string {
	if opts.Path != "" {
		return opts.Path
	}
	var f *pflag.Flag
	if opts.Flags != nil {
		f = opts.Flags.Lookup(FlagConfig)
	}
	if f != nil && f.Changed {
		return f.Value.String()
	}
	if v, ok := lookupEnv(opts.Environ, EnvConfig); ok && v != "" {
		return v
	}
	if opts.DefaultPath != "" {
		return opts.DefaultPath
	}
	if f != nil && f.Value.String() != "" {
		return f.Value.String()
	}
	return DefaultPath
}

// lookupEnv finds name in an os.Environ-style list; the last entry wins,
// as it would for a shell that appended it.
func lookupEnv(environ []string, name string) (string, bool) {
	val, found := "", false
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			val, found = v, true
		}
	}
	return val, found
}
