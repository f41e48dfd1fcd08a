package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/internal/wire"
)

// instance is one running plugin process.
type instance struct {
	spec   config.Plugin
	log    *slog.Logger
	client *plugin.Client
	rpc    plugin.ClientProtocol
	// stopped is set once the process was killed for hanging or seen to
	// have exited; the next lookup starts a new one.
	stopped atomic.Bool
}

// exitWait is how long a call that lost its connection waits for the
// process to be reported gone before it blames the plugin's own answer
// instead. Exit is noticed within milliseconds; the margin is for a busy
// machine.
const exitWait = 5 * time.Second

func startInstance(spec config.Plugin, log *slog.Logger) (*instance, error) {
	if err := checkBinary(spec); err != nil {
		return nil, err
	}
	inst := &instance{spec: spec, log: log}
	env := os.Environ()
	for _, k := range sortedKeys(spec.Env) {
		env = append(env, k+"="+spec.Env[k])
	}
	cmd := exec.Command(spec.Path)
	cmd.Env = env
	var secure *plugin.SecureConfig
	if spec.SHA256 != nil {
		secure = &plugin.SecureConfig{Checksum: spec.SHA256, Hash: sha256.New()}
	}
	inst.client = plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: wire.Handshake,
		Plugins: plugin.PluginSet{
			wire.KeyStoreName:    &wire.KeyStorePlugin{Name: spec.Name},
			wire.ParamSourceName: &wire.ParamSourcePlugin{Name: spec.Name},
			wire.HookName:        &wire.HookPlugin{Name: spec.Name},
		},
		Cmd: cmd,
		// cmd.Env already holds fleetprov's environment, then the
		// plugin's own variables, which must win.
		SkipHostEnv:      true,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     spec.StartTimeout,
		Logger:           newSlogAdapter(log),
		GRPCDialOptions:  []grpc.DialOption{grpc.WithUnaryInterceptor(inst.intercept)},
	})
	started := time.Now()
	rpc, err := inst.client.Client()
	if err != nil {
		// go-plugin leaves the process running when the handshake fails.
		inst.client.Kill()
		return nil, inst.startError(err)
	}
	inst.rpc = rpc
	log.Debug("plugin started", "path", spec.Path, "took", time.Since(started).Round(time.Millisecond))
	return inst, nil
}

// checkBinary gives a missing or unusable binary a message of its own; go-plugin's
// would not name the config key to fix.
func checkBinary(spec config.Plugin) error {
	fi, err := os.Stat(spec.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return failure.Usage(fmt.Sprintf("plugin %s: binary %s does not exist: install it there or set its path in the plugins section", spec.Name, spec.Path))
	case err != nil:
		return failure.Usage(fmt.Sprintf("plugin %s: binary %s cannot be read (%v): fix its permissions or its path in the plugins section", spec.Name, spec.Path, err))
	case fi.IsDir() || fi.Mode().Perm()&0o111 == 0:
		return failure.Usage(fmt.Sprintf("plugin %s: %s is not an executable file: set path in the plugins section to the plugin binary", spec.Name, spec.Path))
	}
	return nil
}

var versionRE = regexp.MustCompile(`Plugin version: (\d+)`)

// startError turns go-plugin's start errors into one line naming the
// plugin. Only a handshake that timed out is worth retrying: a binary that
// does not match, speaks another protocol or exits at once will do the
// same again.
func (i *instance) startError(err error) error {
	name, p := i.spec.Name, i.spec.Path
	msg := err.Error()
	switch {
	case errors.Is(err, plugin.ErrChecksumsDoNotMatch):
		got := "unknown"
		if f, oerr := os.Open(p); oerr == nil {
			h := sha256.New()
			if _, cerr := io.Copy(h, f); cerr == nil {
				got = hex.EncodeToString(h.Sum(nil))
			}
			f.Close()
		}
		return fmt.Errorf("plugin %s: binary %s has sha256 %s, not the %s the config expects: install the expected build or update sha256 in the plugins section", name, p, got, hex.EncodeToString(i.spec.SHA256))
	case strings.Contains(msg, "incompatible API version"):
		theirs := "another"
		if m := versionRE.FindStringSubmatch(msg); m != nil {
			theirs = m[1]
		}
		return fmt.Errorf("plugin %s: %s speaks plugin protocol version %s, this fleetprov speaks %d: install a build of the plugin made for this fleetprov", name, p, theirs, wire.ProtocolVersion)
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		return failure.Transient(fmt.Errorf("plugin %s: %s did not complete its handshake within %s (startTimeout): it was stopped; see its log lines above", name, p, i.spec.StartTimeout))
	case strings.Contains(msg, "exited before we could connect"), strings.Contains(msg, "Failed to read any lines from plugin's stdout"):
		return fmt.Errorf("plugin %s: %s exited before its handshake: is it a fleetprov plugin? see its log lines above", name, p)
	}
	return fmt.Errorf("plugin %s: %s could not be started: %v", name, p, err)
}

func (i *instance) alive() bool { return !i.stopped.Load() && !i.client.Exited() }

// dispense returns the host-side client of one interface.
func (i *instance) dispense(iface string) (any, error) {
	raw, err := i.rpc.Dispense(iface)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %w", i.spec.Name, err)
	}
	return raw, nil
}

// kill stops the process (gracefully first, as go-plugin does) and waits
// until it is gone.
func (i *instance) kill() {
	i.stopped.Store(true)
	i.client.Kill()
}

// intercept bounds every call with the plugin's callTimeout and tells a
// hang and a crash apart from an error the plugin answered with.
func (i *instance) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if !strings.HasPrefix(method, "/fleetprov.plugins.") {
		// go-plugin's own calls (shutdown, broker) have their own
		// bounds, and a kill must not recurse into kill.
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	call := path.Base(method)
	// A timer rather than a deadline on the context: gRPC would pass a
	// deadline on to the plugin, whose end of the call would then give up
	// first and blur a hang into a cancelled call.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timedOut atomic.Bool
	timer := time.AfterFunc(i.spec.CallTimeout, func() {
		timedOut.Store(true)
		cancel()
	})
	err := invoker(cctx, method, req, reply, cc, opts...)
	timer.Stop()
	if err == nil || ctx.Err() != nil {
		// The caller gave up (a signal, its own deadline): not the
		// plugin's doing.
		return err
	}
	name := i.spec.Name
	if timedOut.Load() {
		i.log.Error("plugin did not answer in time: stopping it", "call", call, "callTimeout", i.spec.CallTimeout)
		i.kill()
		return failure.Transient(fmt.Errorf("plugin %s did not answer %s within %s (callTimeout): it was stopped and starts again on the next try", name, call, i.spec.CallTimeout))
	}
	if status.Code(err) == codes.Unavailable && i.waitExited() {
		i.stopped.Store(true)
		return failure.Transient(fmt.Errorf("plugin %s exited during %s (crashed or killed; its last output is in the log above): it starts again on the next try", name, call))
	}
	return err
}

func (i *instance) waitExited() bool {
	deadline := time.Now().Add(exitWait)
	for !i.client.Exited() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
