package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
)

// A reset killed after moving the journal and the certificate aside, but
// before clearing config.yaml, left a config naming files that are gone,
// and the next run said "already provisioned". With reset's plan on disk,
// the next run (or reset) finishes the reset first.
func TestInterruptedResetIsFinished(t *testing.T) {
	for _, next := range []string{"run", "reset"} {
		t.Run("finished by "+next, func(t *testing.T) {
			dir, _ := cloudtest.Start(t, cloudsim.Options{}, nil)
			cfgPath := filepath.Join(dir, "config.yaml")
			main := func(args ...string) (int, string) {
				var out bytes.Buffer
				code := (Build{}).Main(append([]string{"fleetprov"}, append(args, "--config", cfgPath)...), &out, &out)
				return code, out.String()
			}
			if code, out := main("run"); code != ExitOK {
				t.Fatalf("first run: %d\n%s", code, out)
			}
			cfg, err := config.Load(config.LoadOptions{Path: cfgPath, SkipFileChecks: true})
			if err != nil {
				t.Fatal(err)
			}
			// What reset does before it is killed: its plan, then the
			// first two moves (the journal, the certificate).
			plan := newResetPlan(cfg, time.Now())
			if len(plan.Moves) < 3 || !plan.ClearConfig {
				t.Fatalf("plan %+v", plan)
			}
			if err := plan.save(resetPlanPath(cfg)); err != nil {
				t.Fatal(err)
			}
			for _, m := range plan.Moves[:2] {
				if err := os.Rename(m.From, m.To); err != nil {
					t.Fatal(err)
				}
			}

			code, out := main(next)
			if code != ExitOK || !strings.Contains(out, "finishing a reset that was interrupted") {
				t.Fatalf("%s after the interrupted reset: exit %d\n%s", next, code, out)
			}
			if _, err := os.Stat(resetPlanPath(cfg)); !os.IsNotExist(err) {
				t.Errorf("the plan is still there after %s finished it", next)
			}
			for _, m := range plan.Moves {
				if _, err := os.Stat(m.To); err != nil {
					t.Errorf("%s was not kept as %s: %v", m.From, m.To, err)
				}
			}
			if _, err := os.Stat(plan.ConfigBackup); err != nil {
				t.Errorf("no copy of the provisioned config: %v", err)
			}
			if next == "reset" {
				if code, out = main("run"); code != ExitOK {
					t.Fatalf("run after reset: %d\n%s", code, out)
				}
			}
			if strings.Contains(out, "already provisioned") || !strings.Contains(out, "provisioned in") {
				t.Errorf("the device did not provision afresh:\n%s", out)
			}
		})
	}
}
