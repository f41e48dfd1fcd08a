// Package mosquittotest starts Debian's mosquitto for a test: a broker
// fleetprov did not write, to check that the device client and the cloud
// emulator's broker mode interoperate with one.
//
// A test that needs it calls Start; when mosquitto is not installed the
// test is skipped with a message saying so, unless FLEETPROV_REQUIRE_TOOLS=1
// (as in CI), where a missing tool is a failure instead.
package mosquittotest

import (
	"fmt"
	"github.com/fleetprov/fleetprov/internal/syncbuf"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Config describes the one listener the broker gets, on 127.0.0.1 and a
// free port.
type Config struct {
	// CAFile, CertFile and KeyFile make the listener mutual TLS: the
	// broker presents CertFile/KeyFile, requires a client certificate
	// signed by CAFile (require_certificate true) and takes the client
	// certificate's CN as the username (use_identity_as_username true).
	// All three empty: a plain TCP listener that allows anonymous clients.
	CAFile, CertFile, KeyFile string
	// Extra lines appended to mosquitto.conf, e.g. "max_inflight_messages 1".
	Extra []string
}

// Broker is a running mosquitto, stopped when the test ends.
type Broker struct {
	addr string
	tls  bool
	cmd  *exec.Cmd
	log  *syncbuf.Buffer
	done chan struct{} // closed when the process exited
}

// Addr is HOST:PORT of the listener.
func (b *Broker) Addr() string { return b.addr }

// URL is the listener as mqtts://HOST:PORT (TLS) or mqtt://HOST:PORT.
func (b *Broker) URL() string {
	if b.tls {
		return "mqtts://" + b.addr
	}
	return "mqtt://" + b.addr
}

// Log is what mosquitto has logged so far.
func (b *Broker) Log() string { return b.log.String() }

// Path finds the mosquitto binary: on PATH, or in /usr/sbin, where Debian
// puts it and which a non-root PATH often lacks.
func Path() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	const debian = "/usr/sbin/mosquitto"
	if _, err := os.Stat(debian); err == nil {
		return debian, nil
	}
	return "", fmt.Errorf("mosquitto not found on PATH or in /usr/sbin (Debian: apt-get install mosquitto)")
}

// Start writes a mosquitto.conf into a temporary directory, starts
// mosquitto with it and waits until the listener accepts connections. The
// broker is stopped, and its log shown if the test failed, at cleanup.
func Start(t testing.TB, cfg Config) *Broker {
	t.Helper()
	bin, err := Path()
	if err != nil {
		if os.Getenv("FLEETPROV_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%v; FLEETPROV_REQUIRE_TOOLS=1 makes this a failure", err)
		}
		t.Skipf("skipping: %v", err)
	}
	tlsSet := cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != ""
	if tlsSet && (cfg.CAFile == "" || cfg.CertFile == "" || cfg.KeyFile == "") {
		t.Fatalf("mosquittotest: CAFile, CertFile and KeyFile go together; got %+v", cfg)
	}
	dir := t.TempDir()
	// The port is free when chosen and may be taken before mosquitto
	// binds it; a second and third try cover that race.
	var lastErr error
	for range 3 {
		b, err := start(t, bin, dir, cfg, tlsSet)
		if err == nil {
			return b
		}
		lastErr = err
	}
	t.Fatalf("mosquittotest: %v", lastErr)
	return nil
}

func start(t testing.TB, bin, dir string, cfg Config, tlsSet bool) (*Broker, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	conf := []string{
		"# written by internal/mosquittotest",
		"per_listener_settings false",
		"persistence false",
		"log_dest stderr",
		"log_type error",
		"log_type warning",
		"log_type notice",
		"log_type information",
		"connection_messages true",
		"listener " + port + " 127.0.0.1",
	}
	if os.Geteuid() == 0 {
		// As root, mosquitto drops to the mosquitto user, which cannot
		// read the test's 0600 keys in its 0700 temporary directory.
		conf = append(conf, "user root")
	}
	if tlsSet {
		conf = append(conf,
			"cafile "+cfg.CAFile,
			"certfile "+cfg.CertFile,
			"keyfile "+cfg.KeyFile,
			"require_certificate true",
			"use_identity_as_username true",
		)
	} else {
		conf = append(conf, "allow_anonymous true")
	}
	conf = append(conf, cfg.Extra...)
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", confPath, err)
	}

	b := &Broker{addr: addr, tls: tlsSet, log: &syncbuf.Buffer{}, done: make(chan struct{})}
	b.cmd = exec.Command(bin, "-c", confPath)
	b.cmd.Stdout = b.log
	b.cmd.Stderr = b.log
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		_ = b.cmd.Wait()
		close(b.done)
	}()
	if err := b.waitListening(10 * time.Second); err != nil {
		b.stop()
		return nil, fmt.Errorf("%w\nmosquitto.conf:\n%s\nlog:\n%s", err, strings.Join(conf, "\n"), b.Log())
	}
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", b.Log())
		}
	})
	return b, nil
}

// waitListening polls the port until it accepts a TCP connection or the
// process exits.
func (b *Broker) waitListening(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-b.done:
			return fmt.Errorf("mosquitto exited before listening on %s (%v)", b.addr, b.cmd.ProcessState)
		default:
		}
		conn, err := net.DialTimeout("tcp", b.addr, 200*time.Millisecond)
		if err == nil {
			_ = conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mosquitto not listening on %s after %v: %w", b.addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the process: SIGTERM, then SIGKILL if it lingers.
func (b *Broker) stop() {
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Signal(os.Interrupt)
	select {
	case <-b.done:
	case <-time.After(3 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
