package states

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
)

// A config the command already read is not read again, but it is checked
// as one LoadConfig reads itself: a claim file gone since is still found.
func TestLoadConfigChecksWhatWasRead(t *testing.T) {
	d := newDevice(t, nil)
	loaded, err := config.Load(config.LoadOptions{Path: d.configPath, SkipFileChecks: true})
	if err != nil {
		t.Fatal(err)
	}
	missing := config.LoadOptions{Path: filepath.Join(t.TempDir(), "not-read.yaml")}

	r := &engine.Run{Data: &engine.Data{}, Log: slog.New(slog.DiscardHandler)}
	if err := (&LoadConfig{Options: missing, Loaded: loaded}).Run(context.Background(), r); err != nil {
		t.Fatalf("with the config read already: %v", err)
	}
	if r.Config != loaded {
		t.Errorf("the run got another config than the one read")
	}

	if err := os.Remove(loaded.ClaimCertPath); err != nil {
		t.Fatal(err)
	}
	err = (&LoadConfig{Options: missing, Loaded: loaded}).Run(context.Background(), &engine.Run{Data: &engine.Data{}, Log: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), loaded.ClaimCertPath) {
		t.Errorf("claim certificate removed after the config was read: err %v, want one naming %s", err, loaded.ClaimCertPath)
	}
}
