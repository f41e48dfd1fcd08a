package config

import (
	"path/filepath"
	"testing"
)

// Every sample in configs/ loads and validates, with no warning (an
// unknown or misspelt key would give one), so none can drift from what
// fleetprov accepts. The local cloud sample is also run end to end by
// cmd/fleetprov's sample_configs script.
func TestSampleConfigs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "configs", "*.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("samples in configs/: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			// The samples name files on a device (or beside the local
			// cloud), not here: their keys and values are checked, not
			// their files.
			c, err := Load(LoadOptions{Path: f, SkipFileChecks: true})
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(c.Warnings) > 0 {
				t.Errorf("%s: warnings %q", f, c.Warnings)
			}
			if c.TemplateName == "" || c.IoTDataEndpoint == "" || len(c.TemplateParams) == 0 {
				t.Errorf("%s: template %q, endpoint %q, params %v: a sample must provision as it stands", f, c.TemplateName, c.IoTDataEndpoint, c.TemplateParams)
			}
		})
	}
}
