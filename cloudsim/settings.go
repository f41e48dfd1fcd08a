package cloudsim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Pre-provisioning hook limits: AWS gives its Lambda 5 s, and only one
// payload version exists.
const (
	MaxHookTimeout      = 5 * time.Second
	HookPayloadVersion  = "2020-04-01"
	templateSettingsExt = ".yaml"
	templateBodyExt     = ".json"
	maxHookAnswer       = 1 << 20
	hookKillGrace       = 250 * time.Millisecond
	templateArnFormat   = "arn:aws:iot:%s:%s:provisioningtemplate/%s"
)

// TemplateSettings are what AWS keeps on a provisioning template besides
// its body: D/templates/NAME.yaml, beside NAME.json. A template without the
// file is enabled and has no hook.
type TemplateSettings struct {
	// Enabled false makes every RegisterThing on the template fail (403
	// AccessDeniedException), as UpdateProvisioningTemplate --no-enabled
	// does.
	Enabled bool
	// Hook is the pre-provisioning hook, nil for none.
	Hook *HookSettings
}

// HookSettings say how to run a pre-provisioning hook: a local command
// (input on stdin, output on stdout) or an HTTP URL (input POSTed, output
// in the response body), standing in for AWS's Lambda.
type HookSettings struct {
	Command        []string // argv; Command[0] resolved at load
	URL            string
	PayloadVersion string
	Timeout        time.Duration
	// dir is where the command runs: the templates directory, so a
	// settings file can name a hook beside it with a relative path.
	dir string
}

func defaultSettings() TemplateSettings { return TemplateSettings{Enabled: true} }

// Settings returns the template's settings (defaults when it has no
// NAME.yaml).
func (t *Template) Settings() TemplateSettings { return t.settings }

// rawSettings is NAME.yaml as written. Unknown keys are refused, so a
// misspelt preProvisioningHook cannot silently leave a template unguarded.
type rawSettings struct {
	Enabled *bool    `yaml:"enabled"`
	Hook    *rawHook `yaml:"preProvisioningHook"`
}

type rawHook struct {
	Command        []string `yaml:"command"`
	URL            string   `yaml:"url"`
	PayloadVersion string   `yaml:"payloadVersion"`
	Timeout        string   `yaml:"timeout"`
}

// ParseTemplateSettings reads a NAME.yaml body. dir is the directory
// relative command paths are resolved against.
func ParseTemplateSettings(body []byte, dir string) (TemplateSettings, error) {
	st := defaultSettings()
	var raw rawSettings
	dec := yaml.NewDecoder(bytes.NewReader(body))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		return st, fmt.Errorf("not valid settings YAML: %w", err)
	}
	if raw.Enabled != nil {
		st.Enabled = *raw.Enabled
	}
	if raw.Hook == nil {
		return st, nil
	}
	h := &HookSettings{Command: raw.Hook.Command, URL: raw.Hook.URL, PayloadVersion: raw.Hook.PayloadVersion, Timeout: MaxHookTimeout, dir: dir}
	switch {
	case len(h.Command) > 0 && h.URL != "":
		return st, errors.New("preProvisioningHook: give command or url, not both")
	case len(h.Command) == 0 && h.URL == "":
		return st, errors.New("preProvisioningHook: give command: [program, args...] or url: http://...")
	case h.URL != "":
		u, err := url.Parse(h.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return st, fmt.Errorf("preProvisioningHook.url: %q is not an http:// or https:// URL", h.URL)
		}
	default:
		path, err := resolveCommand(h.Command[0], dir)
		if err != nil {
			return st, fmt.Errorf("preProvisioningHook.command: %w", err)
		}
		h.Command = append([]string{path}, h.Command[1:]...)
	}
	switch h.PayloadVersion {
	case "":
		h.PayloadVersion = HookPayloadVersion
	case HookPayloadVersion:
	default:
		return st, fmt.Errorf("preProvisioningHook.payloadVersion: %q; the only version is %s", h.PayloadVersion, HookPayloadVersion)
	}
	if raw.Hook.Timeout != "" {
		d, err := time.ParseDuration(raw.Hook.Timeout)
		if err != nil || d <= 0 || d > MaxHookTimeout {
			return st, fmt.Errorf("preProvisioningHook.timeout: %q; use a duration from 1ms to 5s, e.g. 2s (AWS allows its hook 5 s)", raw.Hook.Timeout)
		}
		h.Timeout = d
	}
	st.Hook = h
	return st, nil
}

// resolveCommand finds a hook program at load, so a typo fails start-up
// rather than denying every device. A path with a slash is taken relative
// to dir; a bare name is looked up on PATH.
func resolveCommand(name, dir string) (string, error) {
	if name == "" {
		return "", errors.New("the program name is empty")
	}
	path := name
	if !strings.ContainsRune(name, '/') {
		p, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("%s not found on PATH", name)
		}
		path = p
	} else if !filepath.IsAbs(name) {
		path = filepath.Join(dir, name)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%s is not an executable file", path)
	}
	return path, nil
}

// LoadTemplate reads a template body (DIR/NAME.json) and its settings
// (DIR/NAME.yaml, if present). Errors name the file.
func LoadTemplate(bodyPath string) (*Template, error) {
	name := strings.TrimSuffix(filepath.Base(bodyPath), templateBodyExt)
	body, err := os.ReadFile(bodyPath)
	if err != nil {
		return nil, fmt.Errorf("read template: %w", err)
	}
	t, err := ParseTemplate(name, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", bodyPath, err)
	}
	dir := filepath.Dir(bodyPath)
	stPath := filepath.Join(dir, name+templateSettingsExt)
	stBody, err := os.ReadFile(stPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return t, nil
	case err != nil:
		return nil, fmt.Errorf("read template settings: %w", err)
	}
	if t.settings, err = ParseTemplateSettings(stBody, dir); err != nil {
		return nil, fmt.Errorf("%s: %w", stPath, err)
	}
	return t, nil
}

// loadTemplate is LoadTemplate plus logging what an operator should know.
func (s *Server) loadTemplate(bodyPath string) (*Template, error) {
	t, err := LoadTemplate(bodyPath)
	if err != nil {
		return nil, err
	}
	for _, w := range t.Warnings {
		s.log.Warn("template accepted with a warning", "template", t.Name, "file", bodyPath, "warning", w)
	}
	attrs := []any{"template", t.Name, "enabled", t.settings.Enabled}
	if h := t.settings.Hook; h != nil {
		attrs = append(attrs, "hook", h.target(), "hookTimeout", h.Timeout.String())
	}
	s.log.Debug("template loaded", attrs...)
	return t, nil
}
