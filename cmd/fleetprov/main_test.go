package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/fleetprov/fleetprov/cli"
	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/internal/plugintest"
	"github.com/fleetprov/fleetprov/plugins/hook"
	"github.com/fleetprov/fleetprov/plugins/host"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// envBeCLI makes the test binary behave as fleetprov itself, so tests can
// run (and SIGKILL) the real program without building it separately.
const envBeCLI = "FLEETPROV_TEST_BE_CLI"

func TestMain(m *testing.M) {
	standard := func() int { return build.Main(os.Args, os.Stdout, os.Stderr) }
	switch os.Getenv(envBeCLI) {
	case "1":
		testCLI(standard)
	case "in-process-plugins":
		// A vendor's build that runs plugins in its own process.
		b := build
		b.PluginHost = func(o cli.PluginOptions) cli.PluginHost { return host.New(host.Options(o)) }
		testCLI(func() int { return b.Main(os.Args, os.Stdout, os.Stderr) })
	}
	testscript.Main(removingHost{m}, map[string]func(){
		"fleetprov":          func() { testCLI(standard) },
		"fleet-provisioning": func() { testCLI(standard) },
		// A vendor's build with a hook of its own compiled in.
		"fleetprov-gated": func() {
			b := build
			b.Hooks = []hook.Hook{envGate{}}
			testCLI(func() int { return b.Main(os.Args, os.Stdout, os.Stderr) })
		},
	})
}

// removingHost runs the tests, then removes the plugin host binary that
// needHost built, if a test needed it.
type removingHost struct{ m *testing.M }

func (r removingHost) Run() int {
	code := r.m.Run()
	plugintest.RemoveHost()
	return code
}

// needHost builds the plugin host, once, for a test whose fleetprov runs
// a plugin; the fleetprov finds it by FLEETPROV_PLUGIN_HOST, which is in
// this process's environment from then on.
func needHost(t *testing.T) {
	t.Helper()
	if _, err := plugintest.Host(); err != nil {
		t.Fatal(err)
	}
}

// envGate vetoes entering every state while FLEETPROV_TEST_GATE holds a
// reason.
type envGate struct{}

func (envGate) Name() string { return "vendor gate" }

func (envGate) Notify(_ context.Context, req *hook.NotifyRequest) (*hook.NotifyResponse, error) {
	if reason := os.Getenv("FLEETPROV_TEST_GATE"); reason != "" && req.Event.Kind == hook.Enter {
		return &hook.NotifyResponse{Verdict: hook.Veto, Reason: reason}, nil
	}
	return &hook.NotifyResponse{}, nil
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			// Scripts copy the sample configurations from here.
			root, err := filepath.Abs(filepath.Join("..", ".."))
			env.Setenv("REPO", root)
			return err
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"freeport":   cmdFreePort,
			"waitlisten": cmdWaitListen,
			"certok":     cmdCertOK,
			"cloudcount": cmdCloudCount,
			"keyinfo":    cmdKeyInfo,
			"pidgone":    cmdPIDGone,
			// For the bad-input scripts (badinput_test.go).
			"expiredcert": cmdExpiredCert,
			"journalrec":  cmdJournalRec,
			// For the proxy and IPv6 scripts (netproxy_test.go).
			"proxy":      cmdProxy,
			"proxysaw":   cmdProxySaw,
			"netproxy":   cmdNetProxy,
			"servercert": cmdServerCert,
			"certsan":    cmdCertSAN,
			"hostaddr":   cmdHostAddr,
			"freeport6":  cmdFreePort6,
		},
		Condition: condition,
	})
}

// freeport VAR [PORTVAR]: sets VAR to a free loopback address, and PORTVAR
// to its port.
func cmdFreePort(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 && len(args) != 2 {
		ts.Fatalf("usage: freeport VAR [PORTVAR]")
	}
	addr, err := cloudsim.FreePort()
	ts.Check(err)
	ts.Setenv(args[0], addr)
	if len(args) == 2 {
		_, port, err := net.SplitHostPort(addr)
		ts.Check(err)
		ts.Setenv(args[1], port)
	}
}

// waitlisten ADDR: waits until something accepts TCP connections on ADDR.
func cmdWaitListen(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: waitlisten ADDR")
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", args[0], time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	ts.Fatalf("nothing listens on %s", args[0])
}

// certok CERT CA KEY: CERT is a PEM certificate that chains to CA and whose
// public key is KEY's.
func cmdCertOK(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: certok CERT CA KEY")
	}
	err := certOK(ts.MkAbs(args[0]), ts.MkAbs(args[1]), ts.MkAbs(args[2]))
	if neg {
		if err == nil {
			ts.Fatalf("certificate unexpectedly valid")
		}
		return
	}
	ts.Check(err)
}

func certOK(certPath, caPath, keyPath string) error {
	cert, err := readCert(certPath)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s holds no certificate", caPath)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("%s does not verify against %s: %w", certPath, caPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return err
	}
	key, err := keystore.ParsePrivateKeyPEM(keyPEM, keyPath)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(key.Public(), cert.PublicKey) {
		return fmt.Errorf("%s is not the certificate for the key in %s", certPath, keyPath)
	}
	return nil
}

func readCert(path string) (*x509.Certificate, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(raw)
	if b == nil {
		return nil, fmt.Errorf("%s is not PEM", path)
	}
	return x509.ParseCertificate(b.Bytes)
}

// cloudcount DIR things=N certs=N active=N: the emulator's registry holds
// that many things, device certificates, and ACTIVE device certificates.
func cmdCloudCount(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: cloudcount DIR things=N certs=N active=N")
	}
	got, err := cloudCounts(ts.MkAbs(args[0]))
	ts.Check(err)
	for _, kv := range args[1:] {
		k, v, ok := strings.Cut(kv, "=")
		want, err := strconv.Atoi(v)
		if !ok || err != nil {
			ts.Fatalf("bad count %q", kv)
		}
		if got[k] != want {
			ts.Fatalf("cloud has %s=%d, want %d", k, got[k], want)
		}
	}
}

// cloudCounts counts what the emulator's registry holds.
func cloudCounts(dir string) (map[string]int, error) {
	reg, err := cloudsim.ReadRegistry(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]int{"things": len(reg.SortedThings())}
	for _, c := range reg.SortedCertificates() {
		if c.Claim {
			continue
		}
		out["certs"]++
		if c.Status == cloudsim.StatusActive {
			out["active"]++
		}
	}
	return out, nil
}

// keyinfo KEY TYPE MODE: KEY is a PEM private key of TYPE (P-256, P-384,
// RSA-2048, ...) in a file with permission bits MODE (octal).
func cmdKeyInfo(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: keyinfo KEY TYPE MODE")
	}
	path := ts.MkAbs(args[0])
	raw, err := os.ReadFile(path)
	ts.Check(err)
	key, err := keystore.ParsePrivateKeyPEM(raw, path)
	ts.Check(err)
	var kind string
	switch k := key.Public().(type) {
	case *ecdsa.PublicKey:
		kind = k.Curve.Params().Name
	case *rsa.PublicKey:
		kind = fmt.Sprintf("RSA-%d", k.N.BitLen())
	default:
		kind = fmt.Sprintf("%T", k)
	}
	if kind != args[1] {
		ts.Fatalf("%s holds a %s key, want %s", args[0], kind, args[1])
	}
	fi, err := os.Stat(path)
	ts.Check(err)
	if got := fmt.Sprintf("%04o", fi.Mode().Perm()); got != args[2] {
		ts.Fatalf("%s has mode %s, want %s", args[0], got, args[2])
	}
}

// pidgone FILE: the process whose id FILE holds has exited (within 60 s; a
// zombie not yet reaped counts as exited).
func cmdPIDGone(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: pidgone FILE")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(ts.ReadFile(args[0])))
	ts.Check(err)
	deadline := time.Now().Add(60 * time.Second)
	for processRuns(pid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if processRuns(pid) {
		syscall.Kill(pid, syscall.SIGKILL)
		ts.Fatalf("process %d is still running", pid)
	}
}

func processRuns(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) STATE ...: comm may hold spaces, so read after the last ')'.
	rest := strings.TrimSpace(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return !strings.HasPrefix(rest, "Z")
}
