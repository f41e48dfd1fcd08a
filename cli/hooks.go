package cli

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/hook"
	"github.com/fleetprov/fleetprov/plugins/hook/statescripts"
)

// configHooks is the hook config.yaml asks for. The machine's first step
// (LoadConfig) reads the config, so the hook is built right after it,
// before the journal is opened: a misnamed script stops the run before
// anything changed.
type configHooks struct {
	states []string
	log    *slog.Logger
	h      hook.Hook // nil: no state scripts
}

var _ hook.Hook = (*configHooks)(nil)

func (c *configHooks) Name() string {
	if n, ok := c.h.(interface{ Name() string }); ok {
		return n.Name()
	}
	return "config hooks"
}

func (c *configHooks) Notify(ctx context.Context, req *hook.NotifyRequest) (*hook.NotifyResponse, error) {
	if c.h == nil {
		return &hook.NotifyResponse{}, nil
	}
	return c.h.Notify(ctx, req)
}

// configure builds the hook from cfg.
func (c *configHooks) configure(cfg *config.Config) error {
	h, err := stateScripts(cfg, c.states, c.log)
	if err != nil {
		return err
	}
	if h != nil {
		c.h = h
	}
	return nil
}

// stateScripts reads cfg's state scripts directory; nil when none is
// configured. Every problem is a usage error: the config names scripts
// that could never run.
func stateScripts(cfg *config.Config, states []string, log *slog.Logger) (*statescripts.Hook, error) {
	if cfg.StateScriptsDir == "" {
		return nil, nil
	}
	if err := cfg.CheckStateScriptsDir(); err != nil {
		return nil, err
	}
	h, err := statescripts.New(statescripts.Options{Dir: cfg.StateScriptsDir, Timeout: cfg.StateScriptTimeout, States: states, Logger: log})
	if err != nil {
		return nil, &failure.UsageError{Err: err}
	}
	return h, nil
}

// hookable names the steps hooks are asked about: all but the EveryRun
// first step, which runs before hooks are configured.
func hookable(steps []engine.Step) []string {
	var out []string
	for _, s := range steps {
		if !s.EveryRun {
			out = append(out, s.Name)
		}
	}
	return out
}

// scriptStates names the steps of this build's machine that state scripts
// may hook, for config check.
func scriptStates(app *App) ([]string, error) {
	steps := engine.Steps(engine.Builtins{})
	if app.build.Steps != nil {
		var err error
		if steps, err = app.build.Steps(steps); err != nil {
			return nil, fmt.Errorf("this build's steps: %w", err)
		}
	}
	return hookable(steps), nil
}

// loadThenHooks does the EveryRun step's work, then configures the hooks
// from the config it loaded.
type loadThenHooks struct {
	engine.State
	hooks *configHooks
}

func (s loadThenHooks) Run(ctx context.Context, r *engine.Run) error {
	if err := s.State.Run(ctx, r); err != nil {
		return err
	}
	if r.Config == nil {
		return nil // the engine says so
	}
	return s.hooks.configure(r.Config)
}

// runHooks orders a run's hooks: the build's own, compiled in; then the
// plugins the config marks as hooks, in config order; then the state
// scripts. A veto from an earlier one means the later ones are not asked.
func runHooks(build, plugins, scripts []hook.Hook) []hook.Hook {
	return slices.Concat(build, plugins, scripts)
}

// withConfigHooks wraps the EveryRun step so that it also configures the
// hooks the config names, and returns the hooks for engine.Options.
func withConfigHooks(steps []engine.Step, log *slog.Logger) ([]engine.Step, []hook.Hook) {
	hooks := &configHooks{states: hookable(steps), log: log}
	out := make([]engine.Step, len(steps))
	for i, s := range steps {
		out[i] = s
		if s.EveryRun && s.State != nil {
			out[i].State = loadThenHooks{State: s.State, hooks: hooks}
		}
	}
	return out, []hook.Hook{hooks}
}
