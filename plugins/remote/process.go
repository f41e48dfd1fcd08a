package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/internal/relay"
)

// HostEnv names the plugin host binary, over every other place.
const HostEnv = "FLEETPROV_PLUGIN_HOST"

// HostName is the plugin host binary's file name.
const HostName = "fleetprov-plugin-host"

// LibDir is where the .deb installs the plugin host.
const LibDir = "/usr/lib/fleetprov"

// FindHost returns the plugin host binary for starting plugin: the path
// in FLEETPROV_PLUGIN_HOST if set; else fleetprov-plugin-host next to
// this program's executable (symbolic links resolved), in
// /usr/lib/fleetprov, or on PATH, the first that exists.
func FindHost(plugin string) (string, error) {
	if p := os.Getenv(HostEnv); p != "" {
		if err := usable(p); err != nil {
			return "", failure.Usage(fmt.Sprintf("plugin %s needs the plugin host, but %s=%s %v: set it to the path of fleetprov-plugin-host (go build -o DIR/%s ./cmd/%s), or unset it", plugin, HostEnv, p, err, HostName, HostName))
		}
		return p, nil
	}
	var looked []string
	dir := ""
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dir = filepath.Dir(exe)
		p := filepath.Join(dir, HostName)
		if usable(p) == nil {
			return p, nil
		}
		looked = append(looked, dir)
	}
	if p := filepath.Join(LibDir, HostName); usable(p) == nil {
		return p, nil
	}
	looked = append(looked, LibDir)
	if p, err := exec.LookPath(HostName); err == nil {
		return p, nil
	}
	looked = append(looked, "PATH")
	if dir == "" {
		dir = "DIR"
	}
	return "", failure.Usage(fmt.Sprintf("plugin %s needs the plugin host %s, which is in none of %s: install it beside fleetprov (go build -o %s ./cmd/%s), or set %s to its path",
		plugin, HostName, strings.Join(looked, ", "), filepath.Join(dir, HostName), HostName, HostEnv))
}

// usable says why p is no binary to run; nil when it is one.
func usable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errors.New("does not exist")
	case err != nil:
		return fmt.Errorf("cannot be read (%v)", err)
	case fi.IsDir() || fi.Mode().Perm()&0o111 == 0:
		return errors.New("is not an executable file")
	}
	return nil
}

// process is one running plugin host.
type process struct {
	path string
	log  *slog.Logger
	cmd  *exec.Cmd
	in   io.WriteCloser
	w    *relay.Writer

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan *relay.Frame
	// gone is closed when the host's stdout ends: it exited, crashed or
	// was killed. exited is closed once the process is reaped.
	gone   chan struct{}
	exited chan struct{}
}

// start starts the plugin host for plugin spec (the first one needed),
// giving it the whole plugins section, and checks its Hello.
func start(spec config.Plugin, plugins []config.Plugin, log *slog.Logger) (*process, error) {
	path, err := FindHost(spec.Name)
	if err != nil {
		return nil, err
	}
	p := &process{
		path:    path,
		log:     log,
		pending: map[uint64]chan *relay.Frame{},
		gone:    make(chan struct{}),
		exited:  make(chan struct{}),
	}
	cmd := exec.Command(path)
	cmd.Stderr = &lineLogger{log: log.With("process", HostName)}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("plugin %s: start the plugin host %s: %w", spec.Name, path, err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("plugin %s: start the plugin host %s: %w", spec.Name, path, err)
	}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("plugin %s: start the plugin host %s: %w: install fleetprov-plugin-host of this fleetprov's build there, or set %s", spec.Name, path, err, HostEnv)
	}
	p.cmd, p.in, p.w = cmd, in, relay.NewWriter(in)
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	// The plugins section goes in the Hello, so that the host can check
	// and start any of them without another round trip.
	hello := relay.Hello{Magic: relay.ClientMagic, Version: relay.Version, Plugins: plugins, LogLevel: relay.MinLevel(context.Background(), log)}
	// Writing cannot block: the pipe holds far more than a Hello, and
	// the host reads it only after writing its own.
	if err := p.w.Write(hello); err != nil {
		p.kill()
		return nil, fmt.Errorf("plugin %s: the plugin host %s exited at start: see its output in the log above", spec.Name, path)
	}
	dec := cbor.NewDecoder(out)
	theirs := make(chan error, 1)
	var h relay.Hello
	var ready relay.Frame
	go func() {
		err := dec.Decode(&h)
		if err == nil && h.Magic == relay.Magic && h.Version == relay.Version {
			err = dec.Decode(&ready)
		}
		theirs <- err
	}()
	// The host answers at once; the bound is for one that never will.
	// A short startTimeout meant for a plugin does not shorten it.
	wait := max(spec.StartTimeout, config.DefaultPluginStartTimeout)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case err = <-theirs:
	case <-timer.C:
		p.kill()
		return nil, failure.Transient(fmt.Errorf("plugin %s: the plugin host %s did not answer within %s: it was stopped; see its log lines above", spec.Name, path, wait))
	}
	switch {
	case err != nil:
		p.kill()
		return nil, fmt.Errorf("plugin %s: the plugin host %s exited at start: is it fleetprov-plugin-host? see its output in the log above", spec.Name, path)
	case h.Magic != relay.Magic:
		p.kill()
		return nil, fmt.Errorf("plugin %s: %s is not a fleetprov plugin host: set %s to fleetprov-plugin-host, or unset it", spec.Name, path, HostEnv)
	case h.Version != relay.Version:
		p.kill()
		return nil, fmt.Errorf("plugin %s: the plugin host %s speaks relay protocol version %d, this fleetprov speaks %d: install the fleetprov-plugin-host built with this fleetprov", spec.Name, path, h.Version, relay.Version)
	case ready.Kind != relay.KindReady || ready.Err != nil:
		p.kill()
		why := "it answered out of turn"
		if ready.Err != nil {
			why = ready.Err.Decode().Error()
		}
		return nil, fmt.Errorf("plugin %s: the plugin host %s refused this fleetprov (%s): install the fleetprov-plugin-host built with this fleetprov", spec.Name, path, why)
	}
	go p.read(dec)
	log.Debug("plugin host started", "path", path, "took", time.Since(started).Round(time.Millisecond))
	return p, nil
}

// read delivers the host's replies and logs its records until its stdout
// ends.
func (p *process) read(dec *cbor.Decoder) {
	defer close(p.gone)
	for {
		var f relay.Frame
		if err := dec.Decode(&f); err != nil {
			return
		}
		switch f.Kind {
		case relay.KindReply:
			p.mu.Lock()
			ch := p.pending[f.ID]
			delete(p.pending, f.ID)
			p.mu.Unlock()
			if ch != nil {
				ch <- &f
			}
		case relay.KindLog:
			if r := f.Log; r != nil {
				attrs := make([]slog.Attr, 0, len(r.Attrs))
				for _, a := range r.Attrs {
					attrs = append(attrs, a.Decode())
				}
				p.log.LogAttrs(context.Background(), r.Level, r.Msg, attrs...)
			}
		}
	}
}

func (p *process) alive() bool {
	select {
	case <-p.gone:
		return false
	default:
		return true
	}
}

// call sends one call and waits for its reply, the caller giving up, or
// the host dying.
func (p *process) call(ctx context.Context, plugin, method string, req, res any) error {
	body, err := cbor.Marshal(req)
	if err != nil {
		return fmt.Errorf("plugin %s: %s: encode the request: %w", plugin, method, err)
	}
	f := &relay.Frame{Kind: relay.KindCall, Method: method, Body: body}
	if d, ok := ctx.Deadline(); ok {
		f.Deadline = d.UnixNano()
	}
	ch := make(chan *relay.Frame, 1)
	p.mu.Lock()
	p.nextID++
	f.ID = p.nextID
	p.pending[f.ID] = ch
	p.mu.Unlock()
	err = p.w.Write(f)
	// The body may hold a private key (ImportKey).
	clear(body)
	if err != nil {
		p.forget(f.ID)
		<-p.gone // a write fails only when the host is gone
		return p.died(plugin, method)
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			if cause := gaveUp(ctx); cause != nil {
				// The host's end of the call saw the same deadline or
				// cancellation; say it as the caller's, whichever end
				// noticed first.
				return callerGaveUp(cause, plugin, method)
			}
			return r.Err.Decode()
		}
		if res != nil && len(r.Body) > 0 {
			if err := cbor.Unmarshal(r.Body, res); err != nil {
				return fmt.Errorf("plugin %s: %s: the plugin host's answer does not decode (%v): fleetprov and fleetprov-plugin-host are of different builds; install them together", plugin, method, err)
			}
		}
		return nil
	case <-p.gone:
		// A reply read just before the end still counts.
		select {
		case r := <-ch:
			if r.Err != nil {
				return r.Err.Decode()
			}
			if res != nil && len(r.Body) > 0 {
				_ = cbor.Unmarshal(r.Body, res)
			}
			return nil
		default:
		}
		p.forget(f.ID)
		return p.died(plugin, method)
	case <-ctx.Done():
		p.forget(f.ID)
		// Best effort: the host cancels the call's context.
		_ = p.w.Write(&relay.Frame{Kind: relay.KindCancel, ID: f.ID})
		return callerGaveUp(ctx.Err(), plugin, method)
	}
}

// gaveUp is why ctx ended, or nil. Its deadline counts from the moment
// it passes: the host's timer for the same deadline may fire, and its
// answer arrive, before this process's.
func gaveUp(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// callerGaveUp is the error of a call whose context ended: transient when
// its deadline passed, as a plugin call that timed out is.
func callerGaveUp(cause error, plugin, method string) error {
	err := fmt.Errorf("plugin %s: %s: %w", plugin, method, cause)
	if errors.Is(err, context.DeadlineExceeded) {
		err = failure.Transient(err)
	}
	return err
}

func (p *process) forget(id uint64) {
	p.mu.Lock()
	delete(p.pending, id)
	p.mu.Unlock()
}

func (p *process) died(plugin, method string) error {
	return failure.Transient(fmt.Errorf("the plugin host %s exited during %s of plugin %s (crashed or killed; its last output is in the log above): it starts again on the next try", p.path, method, plugin))
}

// close asks the host to stop its plugins and exit, and waits until it
// has.
func (p *process) close() {
	if p.alive() {
		_ = p.call(context.Background(), "", relay.MethodClose, struct{}{}, nil)
	}
	p.in.Close()
	<-p.exited
}

// kill ends a host that failed to start.
func (p *process) kill() {
	p.in.Close()
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// lineLogger logs what the plugin host writes to its stderr (only a
// crash's trace, or a complaint before it could talk to fleetprov), a
// record per line.
type lineLogger struct {
	log *slog.Logger
	buf []byte
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimRight(string(l.buf[:i]), "\r"); line != "" {
			l.log.Error(line)
		}
		l.buf = l.buf[i+1:]
	}
	return len(b), nil
}
