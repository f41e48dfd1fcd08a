package main

// Secrets never reach an output. Each test below provisions against the
// local cloud (`fleetprov cloud serve`) with every command at debug level,
// provokes errors on the way (bad configs, a RegisterThing the cloud
// rejects, a run interrupted with SIGINT, a wrong PIN, a run and a reset
// killed half way, damaged files), and then searches everything anyone
// could read for every secret the test knows (device keys, the claim key,
// the emulator's keys, ownership tokens, PINs): the stdout and stderr of
// every command, the emulator's debug log, what state scripts are given,
// and every file the runs left, in every encoding a log line or a payload
// could carry it in. Files holding a secret must be mode 0600, and the
// directories fleetprov makes for keys and the journal 0700.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
	"github.com/fleetprov/fleetprov/internal/softhsmtest"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// Kinds of secret. A file may hold the kinds its name allows (the key file
// its key, the journal the token); no other output may hold any.
const (
	kindDeviceKey = "device key"
	kindClaimKey  = "claim key"
	kindCloudKey  = "emulator key" // the emulator's CA and server keys
	kindToken     = "ownership token"
	kindPIN       = "PKCS#11 PIN"
)

// needle is one encoding of (part of) a secret.
type needle struct {
	form string
	b    []byte
}

type secret struct {
	kind, name string
	needles    []needle
}

// scanned is one output: a command's stream, the emulator's log, or a file
// as a walk found it.
type scanned struct {
	name    string
	data    []byte
	allowed map[string]bool
	file    bool
	mode    fs.FileMode
}

// leakScan collects outputs and secrets while a test runs and searches
// every output for every secret at the end, when all secrets are known (a
// key or a token may appear in an output before the test has read it).
type leakScan struct {
	outputs    []scanned
	seenFiles  map[string]bool
	secrets    []secret
	seenSecret map[string]bool
	// fileAllows says which kinds a file may hold, from its path.
	fileAllows func(path string) []string
}

func newLeakScan(fileAllows func(path string) []string) *leakScan {
	return &leakScan{seenFiles: map[string]bool{}, seenSecret: map[string]bool{}, fileAllows: fileAllows}
}

func (s *leakScan) add(name string, data []byte) {
	s.outputs = append(s.outputs, scanned{name: name, data: slices.Clone(data)})
}

// walk adds every regular file under root, once per distinct content.
func (s *leakScan) walk(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // replaced while we walked
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		id := fmt.Sprintf("%s\x00%o\x00%s", path, fi.Mode().Perm(), data)
		if s.seenFiles[id] {
			return nil
		}
		s.seenFiles[id] = true
		allowed := map[string]bool{}
		for _, k := range s.fileAllows(path) {
			allowed[k] = true
		}
		s.outputs = append(s.outputs, scanned{name: path, data: data, allowed: allowed, file: true, mode: fi.Mode().Perm()})
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
}

// addKey adds the private key in a PEM file as a secret of kind.
func (s *leakScan) addKey(t *testing.T, kind, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	s.addKeyPEM(t, kind, path, raw)
}

// addKeyPEM adds the private key in raw, read from path, as a secret.
func (s *leakScan) addKeyPEM(t *testing.T, kind, path string, raw []byte) {
	t.Helper()
	if s.seenSecret[string(raw)] {
		return
	}
	s.seenSecret[string(raw)] = true
	key, err := keystore.ParsePrivateKeyPEM(raw, path)
	if err != nil {
		t.Fatal(err)
	}
	sec := secret{kind: kind, name: kind + " " + filepath.Base(path)}
	// The whole key, as stored: PEM body and DER in any encoding.
	if b, _ := pem.Decode(raw); b != nil {
		sec.needles = append(sec.needles, forms("DER", b.Bytes)...)
	}
	// Its private numbers, in 16-byte pieces: a key sent or logged in
	// another container (PKCS#1 where the file has PKCS#8, a CBOR byte
	// string, a hex dump) or cut short still shows one of them whole.
	var private []*big.Int
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		d, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		private = append(private, new(big.Int).SetBytes(d))
	case *rsa.PrivateKey:
		private = append(private, k.D)
		private = append(private, k.Primes...)
	default:
		t.Fatalf("%s: %T", path, key)
	}
	for i, n := range private {
		b := n.Bytes()
		for off := 0; off+16 <= len(b); off += 16 {
			sec.needles = append(sec.needles, forms(fmt.Sprintf("private number %d bytes %d-%d", i, off, off+16), b[off:off+16])...)
		}
	}
	s.secrets = append(s.secrets, sec)
}

// addText adds a secret that is text (a token, a PIN): as it is, a piece
// of it, and its bytes encoded.
func (s *leakScan) addText(kind, value string) {
	if value == "" || s.seenSecret[kind+value] {
		return
	}
	s.seenSecret[kind+value] = true
	sec := secret{kind: kind, name: kind, needles: forms("text", []byte(value))}
	if len(value) >= 32 {
		for off := 0; off+16 <= len(value); off += 16 {
			sec.needles = append(sec.needles, needle{fmt.Sprintf("characters %d-%d", off, off+16), []byte(value[off : off+16])})
		}
	}
	s.secrets = append(s.secrets, sec)
}

// forms are the encodings b could take in a log line, a payload or a file:
// raw bytes, hex in either case, and standard and URL base64 at each of
// the three offsets b can have inside a longer encoded buffer (the
// characters that depend on b alone).
func forms(label string, b []byte) []needle {
	ns := []needle{
		{label + " raw", b},
		{label + " hex", []byte(hex.EncodeToString(b))},
		{label + " HEX", []byte(strings.ToUpper(hex.EncodeToString(b)))},
	}
	for _, enc := range []struct {
		name string
		e    *base64.Encoding
	}{{"base64", base64.StdEncoding}, {"base64url", base64.URLEncoding}} {
		for k := 0; k < 3; k++ {
			s := enc.e.EncodeToString(append(make([]byte, k), b...))
			from, to := (k+2)/3*4, (k+len(b))/3*4
			if to-from < 16 {
				continue
			}
			n := needle{fmt.Sprintf("%s %s at offset %d", label, enc.name, k), []byte(s[from:to])}
			if !slices.ContainsFunc(ns, func(o needle) bool { return bytes.Equal(o.b, n.b) }) {
				ns = append(ns, n)
			}
		}
	}
	return ns
}

// squeezed is data without line breaks and blanks, raw or escaped as a
// log line or JSON writes them, so that a PEM or a hex dump broken over
// lines is found too.
func squeezed(data []byte) []byte {
	out := make([]byte, 0, len(data))
	for i := 0; i < len(data); i++ {
		switch c := data[i]; c {
		case ' ', '\t', '\r', '\n':
			continue
		case '\\':
			if i+1 < len(data) && (data[i+1] == 'n' || data[i+1] == 'r' || data[i+1] == 't') {
				i++
				continue
			}
			out = append(out, c)
		default:
			out = append(out, c)
		}
	}
	return out
}

// runs are the stretches of data, at least min long, made of bytes in.
func runs(data []byte, min int, in func(byte) bool) [][]byte {
	var out [][]byte
	for i := 0; i < len(data); {
		j := i
		for j < len(data) && in(data[j]) {
			j++
		}
		if j-i >= min {
			out = append(out, data[i:j])
		}
		i = j + 1
	}
	return out
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isBase64(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '-' || c == '_'
}

type view struct {
	name string
	b    []byte
}

// views are the forms of data a secret is searched in: as it is, without
// line breaks, and with every long run of hex digits or base64 decoded, so
// that a payload dumped in hex or base64 (a PEM inside a CBOR answer,
// say) shows the bytes it holds.
func views(data []byte) []view {
	sq := squeezed(data)
	var hexed, b64 []byte
	for _, run := range runs(sq, 32, isHex) {
		for off := 0; off < 2; off++ {
			r := run[off:]
			if dec, err := hex.DecodeString(string(r[:len(r)/2*2])); err == nil {
				hexed = append(append(hexed, dec...), 0)
			}
		}
	}
	for _, run := range runs(sq, 24, isBase64) {
		std := strings.NewReplacer("-", "+", "_", "/").Replace(string(run))
		for off := 0; off < 4; off++ {
			r := std[off:]
			if dec, err := base64.RawStdEncoding.DecodeString(r[:len(r)/4*4]); err == nil {
				b64 = append(append(b64, dec...), 0)
			}
		}
	}
	return []view{{"", data}, {" across lines", sq}, {" in decoded hex", squeezed(hexed)}, {" in decoded base64", squeezed(b64)}}
}

// headLen is how many leading bytes of a needle the search looks up at
// each position of an output; every needle is at least this long.
const headLen = 16

// searcher finds many needles in one pass over an output: at each byte it
// looks up the next headLen bytes among the needles' heads, and compares
// the rest only on a hit. (A bytes.Index per needle takes minutes under
// the race detector.)
type searcher struct {
	heads map[[headLen]byte][]searchRef
}

type searchRef struct {
	secret int
	n      needle
}

func newSearcher(t *testing.T, secrets []secret) *searcher {
	t.Helper()
	s := &searcher{heads: map[[headLen]byte][]searchRef{}}
	for i, sec := range secrets {
		for _, n := range sec.needles {
			if len(n.b) < headLen {
				t.Fatalf("%s: the %s form is %d bytes, shorter than %d: too short to search for", sec.name, n.form, len(n.b), headLen)
			}
			head := [headLen]byte(n.b[:headLen])
			s.heads[head] = append(s.heads[head], searchRef{secret: i, n: n})
		}
	}
	return s
}

// find returns, for each secret data holds, where it first showed.
func (s *searcher) find(data []byte) map[int]string {
	found := map[int]string{}
	for _, v := range views(data) {
		for i := 0; i+headLen <= len(v.b); i++ {
			refs, ok := s.heads[[headLen]byte(v.b[i:i+headLen])]
			if !ok {
				continue
			}
			for _, r := range refs {
				if _, seen := found[r.secret]; !seen && bytes.HasPrefix(v.b[i:], r.n.b) {
					found[r.secret] = fmt.Sprintf("%s%s at byte %d", r.n.form, v.name, i)
				}
			}
		}
	}
	return found
}

// check fails the test for every secret found where it may not be, for
// every file holding a secret with a mode other than 0600, and for every
// secret found nowhere at all (the search would then prove nothing).
// It returns how many streams and files it searched, and for how many
// secrets.
func (s *leakScan) check(t *testing.T) (streams, files, secrets int) {
	t.Helper()
	if len(s.secrets) == 0 {
		t.Fatal("no secrets collected")
	}
	search := newSearcher(t, s.secrets)
	foundSomewhere := make([]bool, len(s.secrets))
	for _, out := range s.outputs {
		if out.file {
			files++
		} else {
			streams++
		}
		found := search.find(out.data)
		for i, sec := range s.secrets {
			where, ok := found[i]
			if !ok {
				continue
			}
			foundSomewhere[i] = true
			if !out.allowed[sec.kind] {
				t.Errorf("LEAK: %s holds the %s (%s)", out.name, sec.name, where)
			}
		}
		if out.file && len(found) > 0 && out.mode != 0o600 {
			t.Errorf("%s holds a secret but has mode %04o, want 0600", out.name, out.mode)
		}
	}
	for i, sec := range s.secrets {
		if !foundSomewhere[i] {
			t.Errorf("the %s was found nowhere, not even where it belongs: the search cannot see it", sec.name)
		}
	}
	return streams, files, len(s.secrets)
}

// secretsRun is one device against one local cloud, every command at
// debug level in one log format, every output collected.
type secretsRun struct {
	t         *testing.T
	self      string
	dir       string // the emulator's directory; the device's files are below it
	cfg       string
	journal   string
	creds     string
	logFormat string
	env       []string
	scan      *leakScan
	serverLog *cloudtest.Output
	stopServe func()
	steps     int
}

// secretsLayout puts the device's credentials and journal in directories
// fleetprov has to make, so that their modes are its own.
func secretsLayout(createKeys bool) func(dir string) {
	return func(dir string) {
		cfg := filepath.Join(dir, "config.yaml")
		b, err := os.ReadFile(cfg)
		if err != nil {
			panic(err)
		}
		s := strings.Replace(string(b), filepath.Join(dir, "device", "credentials"), filepath.Join(dir, "secure", "credentials"), 1)
		s = strings.Replace(s, filepath.Join(dir, "device", "journal"), filepath.Join(dir, "secure", "state", "journal"), 1)
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			panic(err)
		}
		if createKeys {
			// As an AWS user of CreateKeysAndCertificate must, widen the
			// Greengrass lite claim policy to it.
			p := filepath.Join(dir, "policies", "GreengrassProvisioningClaimPolicy.json")
			b, err := os.ReadFile(p)
			if err != nil {
				panic(err)
			}
			if err := os.WriteFile(p, bytes.Replace(b, []byte("certificates/create-from-csr/*"), []byte("certificates/create*"), -1), 0o644); err != nil {
				panic(err)
			}
		}
	}
}

// The RegisterThing rejected, then held long enough to interrupt the run
// waiting for it, then answered.
var secretsFaults = []string{"RegisterThing:reject=400/InvalidParameters:times=1", "RegisterThing:delay=30s:times=1"}

func newSecretsRun(t *testing.T, logFormat string, createKeys bool, faults []string, env ...string) *secretsRun {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The emulator is `fleetprov cloud serve` at debug level, in the same
	// log format as the device's commands.
	dir := t.TempDir()
	addr, err := cloudsim.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if err := cloudsim.Init(cloudsim.InitOptions{Dir: dir, Listen: addr}); err != nil {
		t.Fatal(err)
	}
	secretsLayout(createKeys)(dir)
	args := []string{"cloud", "serve", "--dir", dir, "--log-level", "debug", "--log-format", logFormat}
	for _, f := range faults {
		args = append(args, "--fault", f)
	}
	serve := exec.Command(self, args...)
	serve.Env = append(os.Environ(), envBeCLI+"=1")
	serverLog, serverOut := &cloudtest.Output{}, &cloudtest.Output{}
	serve.Stdout, serve.Stderr = serverOut, serverLog
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- serve.Wait() }()
	stopServe := sync.OnceFunc(func() {
		_ = serve.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("cloud serve: %v\n%s", err, serverLog.String())
			}
		case <-time.After(cloudtest.WaitLimit):
			_ = serve.Process.Kill()
			t.Errorf("cloud serve did not stop within %s of SIGTERM", cloudtest.WaitLimit)
		}
	})
	t.Cleanup(stopServe)
	deadline := time.Now().Add(cloudtest.WaitLimit)
	for !strings.Contains(serverOut.String(), "listening on ") {
		if time.Now().After(deadline) {
			t.Fatalf("cloud serve did not start:\n%s%s", serverOut.String(), serverLog.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := &secretsRun{
		t: t, self: self, dir: dir, logFormat: logFormat, serverLog: serverLog, stopServe: stopServe,
		cfg:     filepath.Join(dir, "config.yaml"),
		journal: filepath.Join(dir, "secure", "state", "journal"),
		creds:   filepath.Join(dir, "secure", "credentials"),
		env:     append(os.Environ(), envBeCLI+"=1", "FLEETPROV_RETRY_DEADLINE=60s"),
	}
	r.env = append(r.env, env...)
	r.scan = newLeakScan(r.fileAllows)
	r.stateScripts()
	return r
}

// stateScripts installs state scripts that record the event they are
// given (in a file of their own, scanned with the rest) and print it
// (fleetprov logs each line): hooks are outputs too. They are asked around
// the two states that handle the token and, in create-keys mode, the key
// (every event carries the same data, so these stand for the others).
func (r *secretsRun) stateScripts() {
	r.t.Helper()
	scripts := filepath.Join(r.dir, "scripts")
	if err := os.Mkdir(scripts, 0o755); err != nil {
		r.t.Fatal(err)
	}
	body := "#!/bin/sh\ntee -a " + filepath.Join(r.dir, "hook-events") + "\necho\n"
	for _, state := range []string{engine.CreateCertificate, engine.RegisterThing} {
		for _, action := range []string{"Enter", "Leave", "Error"} {
			if err := os.WriteFile(filepath.Join(scripts, state+"_"+action+"_50_record"), []byte(body), 0o755); err != nil {
				r.t.Fatal(err)
			}
		}
	}
	r.env = append(r.env, "FLEETPROV_STATE_SCRIPTS_DIR="+scripts)
}

// fileAllows names what each file of the test may hold.
func (r *secretsRun) fileAllows(path string) []string {
	base := filepath.Base(path)
	switch {
	case filepath.Dir(path) == r.creds && (base == "priv_key" || strings.HasPrefix(base, "priv_key.bak-") || strings.HasPrefix(base, ".priv_key.tmp-")):
		return []string{kindDeviceKey}
	case path == r.journal || strings.HasPrefix(path, r.journal+".bak-"):
		return []string{kindToken}
	case path == filepath.Join(r.dir, "registry.cbor") || strings.HasPrefix(path, filepath.Join(r.dir, ".registry.cbor.tmp-")),
		// The emulator's log of registry changes since its snapshot.
		path == filepath.Join(r.dir, "registry.log") || strings.HasPrefix(path, filepath.Join(r.dir, ".registry.log.tmp-")):
		return []string{kindToken}
	case path == filepath.Join(r.dir, "claim.pem.key"), path == filepath.Join(r.dir, "pasted.yaml"):
		return []string{kindClaimKey} // pasted.yaml: a bad config the test writes
	case path == filepath.Join(r.dir, "ca.key") || path == filepath.Join(r.dir, "server.pem.key"):
		return []string{kindCloudKey}
	case filepath.Dir(path) == filepath.Join(r.dir, "pin"):
		return []string{kindPIN}
	}
	return nil
}

func (r *secretsRun) command(extraEnv []string, args ...string) *exec.Cmd {
	cmd := exec.Command(r.self, append(args, "--log-level", "debug", "--log-format", r.logFormat)...)
	cmd.Env = append(slices.Clone(r.env), extraEnv...)
	return cmd
}

// fleetprov runs one command to its end, collects its output and the
// files, and checks its exit code.
func (r *secretsRun) fleetprov(wantCode int, extraEnv []string, args ...string) string {
	r.t.Helper()
	cmd := r.command(extraEnv, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	name := r.collect(strings.Join(args, " "), extraEnv, stdout.Bytes(), stderr.Bytes())
	if code := cloudtest.ExitCode(err); code != wantCode {
		r.t.Fatalf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", name, code, wantCode, stdout.String(), stderr.String())
	}
	return stdout.String() + stderr.String()
}

// interrupted starts `run`, waits until it waits for the cloud's answer to
// RegisterThing (the ownership token in hand), and stops it with SIGINT.
func (r *secretsRun) interrupted() {
	r.t.Helper()
	cmd := r.command(nil, "run", "--config", r.cfg)
	var stdout, stderr cloudtest.Output
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	cloudtest.WaitForState(r.t, r.journal, engine.RegisterThing, &stderr)
	// Until the cloud holds its answer (it logs the fault as it applies
	// it): the delay is then used up, and the next run is answered.
	deadline := time.Now().Add(cloudtest.WaitLimit)
	for !strings.Contains(r.serverLog.String(), secretsFaults[1]) {
		if time.Now().After(deadline) {
			r.t.Fatalf("the cloud never held the answer to RegisterThing:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		r.t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(cloudtest.WaitLimit):
		_ = cmd.Process.Kill()
		r.t.Fatalf("run did not stop within %s of SIGINT:\n%s%s", cloudtest.WaitLimit, stdout.String(), stderr.String())
	}
	r.collect("run (interrupted)", nil, []byte(stdout.String()), []byte(stderr.String()))
	if code := cloudtest.ExitCode(err); code != 130 {
		r.t.Fatalf("interrupted run: exit %d, want 130\n%s%s", code, stdout.String(), stderr.String())
	}
}

func (r *secretsRun) collect(name string, extraEnv []string, stdout, stderr []byte) string {
	r.steps++
	for _, kv := range extraEnv {
		// Named, not shown, when long: some hold a key's PEM.
		if k, v, _ := strings.Cut(kv, "="); len(v) > 100 || strings.ContainsAny(v, "\r\n") {
			kv = fmt.Sprintf("%s=<%d bytes>", k, len(v))
		}
		name += " " + kv
	}
	name = fmt.Sprintf("step %d: fleetprov %s", r.steps, name)
	r.scan.add(name+": stdout", stdout)
	r.scan.add(name+": stderr", stderr)
	r.scan.walk(r.t, r.dir)
	return name
}

// status shows the journal in both forms.
func (r *secretsRun) status() {
	r.t.Helper()
	r.fleetprov(0, nil, "status", "--config", r.cfg)
	r.fleetprov(0, nil, "status", "--config", r.cfg, "--json")
}

// badConfigs are config mistakes that put a secret where a message might
// quote it: a key given where a certificate belongs, the key's content
// pasted where its path belongs (fleet_provisioning's or Greengrass's), the
// wrong key for the claim certificate.
func (r *secretsRun) badConfigs() {
	r.t.Helper()
	claimKey := filepath.Join(r.dir, "claim.pem.key")
	keyPEM, err := os.ReadFile(claimKey)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, tc := range []struct {
		env  string
		code int
	}{
		{"FLEETPROV_CLAIM_CERT_PATH=" + claimKey, 2},
		{"FLEETPROV_ROOT_CA_PATH=" + claimKey, 2},
		{"FLEETPROV_CLAIM_KEY_PATH=" + string(keyPEM), 2},
		{"FLEETPROV_KEY_PATH=" + string(keyPEM), 2},
		{"FLEETPROV_CLAIM_KEY_PATH=" + filepath.Join(r.dir, "server.pem.key"), 2},
	} {
		r.fleetprov(tc.code, []string{tc.env}, "config", "check", "--config", r.cfg)
		r.fleetprov(tc.code, []string{tc.env}, "run", "--config", r.cfg)
	}

	// Greengrass's own system.privateKeyPath holding the key itself, in
	// a config that otherwise looks provisioned.
	cfg, err := os.ReadFile(r.cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	pasted := strings.Replace(string(cfg), `privateKeyPath: ""`, "privateKeyPath: "+strconv.Quote(string(keyPEM)), 1)
	pasted = strings.Replace(pasted, `certificateFilePath: ""`, `certificateFilePath: "`+filepath.Join(r.dir, "claim.pem.crt")+`"`, 1)
	if pasted == string(cfg) {
		r.t.Fatal("config.yaml has no empty system.privateKeyPath to fill")
	}
	bad := filepath.Join(r.dir, "pasted.yaml")
	if err := os.WriteFile(bad, []byte(pasted), 0o600); err != nil {
		r.t.Fatal(err)
	}
	for _, cmd := range [][]string{{"status"}, {"status", "--json"}, {"config", "check"}, {"run"}, {"reset"}} {
		r.fleetprov(2, nil, append(cmd, "--config", bad)...)
	}
	if err := os.Remove(bad); err != nil {
		r.t.Fatal(err)
	}
}

// finish gathers the secrets the runs made, checks the directories' modes
// and searches every output.
func (r *secretsRun) finish(fileKeys bool, minTokens int) {
	t := r.t
	t.Helper()
	// What the emulator shows of its registry, which holds the tokens.
	for _, what := range []string{"things", "certs"} {
		r.fleetprov(0, nil, "cloud", what, "--dir", r.dir)
		r.fleetprov(0, nil, "cloud", what, "--dir", r.dir, "--json")
	}
	r.stopServe()
	r.scan.add("cloud serve log (debug)", []byte(r.serverLog.String()))
	if fileKeys {
		r.wantDirMode(r.creds, 0o700)
	}
	r.wantDirMode(filepath.Dir(r.journal), 0o700)
	if events, err := os.ReadFile(filepath.Join(r.dir, "hook-events")); err != nil || !bytes.Contains(events, []byte(`"state":"RegisterThing"`)) {
		t.Errorf("the state scripts saw no RegisterThing event (%v)", err)
	}
	r.search(minTokens)
}

// search gathers every secret the runs made and searches every output
// collected for them.
func (r *secretsRun) search(minTokens int) {
	t := r.t
	t.Helper()
	r.scan.addKey(t, kindClaimKey, filepath.Join(r.dir, "claim.pem.key"))
	r.scan.addKey(t, kindCloudKey, filepath.Join(r.dir, "ca.key"))
	r.scan.addKey(t, kindCloudKey, filepath.Join(r.dir, "server.pem.key"))
	// Every device key the runs wrote: the current one, the backups
	// --force and reset kept, a temporary file a killed run left (as the
	// walks found them: some are gone by now).
	for _, out := range r.scan.outputs {
		// A key file a test damaged on purpose holds part of a key
		// collected whole from another version.
		if _, err := keystore.ParsePrivateKeyPEM(out.data, out.name); out.file && out.allowed[kindDeviceKey] && err == nil {
			r.scan.addKeyPEM(t, kindDeviceKey, out.name, out.data)
		}
	}
	// Every token the cloud issued, and every token a journal holds.
	reg, err := cloudsim.ReadRegistry(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	for tok := range reg.Tokens {
		r.scan.addText(kindToken, tok)
	}
	journals, _ := filepath.Glob(r.journal + "*")
	for _, j := range journals {
		recs, _, _ := engine.ReadJournal(j)
		for _, rec := range recs {
			r.scan.addText(kindToken, rec.Data.OwnershipToken)
		}
	}
	if len(reg.Tokens) < minTokens {
		t.Errorf("the cloud issued %d ownership tokens, want at least %d", len(reg.Tokens), minTokens)
	}
	for _, out := range r.scan.outputs {
		// The reset plan holds no secret, but is promised 0600 all the same.
		private := len(r.fileAllows(out.name)) > 0 || out.name == r.journal+".reset"
		if out.file && private && out.mode != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", out.name, out.mode)
		}
	}
	start := time.Now()
	streams, files, secrets := r.scan.check(t)
	t.Logf("searched %d outputs (%d streams and logs, %d file versions) for %d secrets in %s",
		streams+files, streams, files, secrets, time.Since(start).Round(time.Millisecond))
}

func (r *secretsRun) wantDirMode(dir string, want fs.FileMode) {
	r.t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		r.t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		r.t.Errorf("directory %s has mode %04o, want %04o", dir, got, want)
	}
}

// TestNoSecretsInOutputs provisions with the key in a file, in both
// certificate modes and both payload formats, at debug level in both log
// formats.
func TestNoSecretsInOutputs(t *testing.T) {
	for _, mode := range []string{"csr", "create-keys"} {
		for _, format := range []string{"json", "cbor"} {
			for _, logFormat := range []string{"text", "json"} {
				t.Run(mode+"/"+format+"/log-"+logFormat, func(t *testing.T) {
					t.Parallel()
					r := newSecretsRun(t, logFormat, mode == "create-keys", secretsFaults,
						"FLEETPROV_CERTIFICATE_MODE="+mode, "FLEETPROV_PAYLOAD_FORMAT="+format)
					r.fleetprov(0, nil, "config", "check", "--config", r.cfg)
					if mode == "csr" && format == "json" {
						// Config errors come before either matters.
						r.badConfigs()
					}
					out := r.fleetprov(1, nil, "run", "--config", r.cfg)
					if !strings.Contains(out, "InvalidParameters") {
						t.Fatalf("the rejected run does not say why:\n%s", out)
					}
					r.status()
					r.interrupted()
					r.status()
					r.fleetprov(0, nil, "run", "--config", r.cfg)
					r.status()
					r.fleetprov(0, nil, "config", "check", "--config", r.cfg)
					r.fleetprov(0, nil, "run", "--config", r.cfg, "--force")
					r.fleetprov(0, nil, "reset", "--config", r.cfg)
					r.fleetprov(0, nil, "run", "--config", r.cfg)
					r.status()
					backups, _ := filepath.Glob(filepath.Join(r.creds, "priv_key.bak-*"))
					if len(backups) != 2 {
						t.Errorf("key backups %v, want two (--force, reset)", backups)
					}
					r.finish(true, 3)
				})
			}
		}
	}
}

// The token's user PIN in these tests, and a wrong one: long and unlike
// anything else, so that a hit is never chance.
const (
	secretsPIN      = "pin-7c1e94d2a8f05b36"
	secretsWrongPIN = "pin-0b5d83e6f1a947c2"
)

// TestNoSecretsWithTokenKey provisions with the device key in a SoftHSM2
// token, through the fleetprov-keystore-pkcs11 plugin: no PIN, right or
// wrong, in any output, whatever goes wrong with it.
func TestNoSecretsWithTokenKey(t *testing.T) {
	module := softhsmtest.Require(t)
	bin := pkcs11PluginBinary(t)
	for _, logFormat := range []string{"text", "json"} {
		t.Run("log-"+logFormat, func(t *testing.T) {
			t.Parallel()
			payload := map[string]string{"text": "json", "json": "cbor"}[logFormat]
			conf, err := softhsmtest.Config(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if err := softhsmtest.InitToken(conf, "fleet", secretsPIN); err != nil {
				t.Fatal(err)
			}
			r := newSecretsRun(t, logFormat, false, secretsFaults, "SOFTHSM2_CONF="+conf, "FLEETPROV_PAYLOAD_FORMAT="+payload)
			addPlugin(t, r.cfg, map[string]any{"name": "pkcs11", "path": bin})
			pins := filepath.Join(r.dir, "pin")
			if err := os.Mkdir(pins, 0o700); err != nil {
				t.Fatal(err)
			}
			pinFile, err := softhsmtest.WritePIN(pins, "pin", secretsPIN)
			if err != nil {
				t.Fatal(err)
			}
			wrongFile, err := softhsmtest.WritePIN(pins, "wrong", secretsWrongPIN)
			if err != nil {
				t.Fatal(err)
			}
			// Outside the walked tree: its mode is the mistake.
			openFile, err := softhsmtest.WritePIN(t.TempDir(), "open", secretsPIN)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(openFile, 0o644); err != nil {
				t.Fatal(err)
			}
			uri := func(pinSource string) string {
				return "plugin:pkcs11/pkcs11:token=fleet;object=device;type=private?module-path=" + module + "&pin-source=" + pinSource
			}
			keyEnv := func(pinSource string) []string { return []string{"FLEETPROV_KEY_PATH=" + uri(pinSource)} }
			r.env = append(r.env, keyEnv("file:"+pinFile)...)

			r.fleetprov(0, nil, "config", "check", "--config", r.cfg)
			// A PIN written into the URI is refused without being quoted.
			for _, v := range []string{
				uri("file:"+pinFile) + "&pin-value=" + secretsPIN,
				"pkcs11:token=fleet;object=device?module-path=" + module + "&pin-value=" + secretsPIN,
			} {
				r.fleetprov(2, []string{"FLEETPROV_KEY_PATH=" + v}, "config", "check", "--config", r.cfg)
				r.fleetprov(2, []string{"FLEETPROV_KEY_PATH=" + v}, "run", "--config", r.cfg)
			}
			// So is the PIN itself written where its source belongs.
			for _, v := range []string{uri(secretsPIN), strings.TrimPrefix(uri(secretsPIN), "plugin:pkcs11/")} {
				r.fleetprov(2, []string{"FLEETPROV_KEY_PATH=" + v}, "config", "check", "--config", r.cfg)
				r.fleetprov(2, []string{"FLEETPROV_KEY_PATH=" + v}, "run", "--config", r.cfg)
				r.fleetprov(2, []string{"FLEETPROV_KEY_PATH=" + v}, "status", "--config", r.cfg)
			}
			// The token refuses a wrong PIN, fleetprov a PIN file all may
			// read, and an unset PIN variable: each says so without it.
			out := r.fleetprov(1, keyEnv("file:"+wrongFile), "run", "--config", r.cfg)
			if !strings.Contains(out, "is wrong") {
				t.Fatalf("a wrong PIN is not reported as such:\n%s", out)
			}
			r.fleetprov(1, keyEnv("file:"+openFile), "run", "--config", r.cfg)
			r.fleetprov(1, keyEnv("env:FLEETPROV_TEST_UNSET_PIN"), "run", "--config", r.cfg)

			r.fleetprov(1, nil, "run", "--config", r.cfg)
			r.status()
			r.interrupted()
			r.status()
			// The PIN from the environment this time, as a production
			// line might give it.
			// The plugin, which uses the key, gets the variable; the
			// restart command, which has no business with it, does not.
			childEnv := filepath.Join(t.TempDir(), "restart-env")
			r.fleetprov(0, append(keyEnv("env:FLEETPROV_TEST_PIN"), "FLEETPROV_TEST_PIN="+secretsPIN,
				"FLEETPROV_RESTART_STRATEGY=command", "FLEETPROV_RESTART_COMMAND=env > "+childEnv), "run", "--config", r.cfg)
			if env, err := os.ReadFile(childEnv); err != nil {
				t.Errorf("the restart command did not run: %v", err)
			} else if regexp.MustCompile(`(?m)^FLEETPROV_TEST_PIN=`).Match(env) || bytes.Contains(env, []byte(secretsPIN)) || !bytes.Contains(env, []byte("PATH=")) {
				t.Errorf("the restart command's environment holds the PIN variable, or lost the rest:\n%s", env)
			}
			r.status()
			r.fleetprov(0, nil, "config", "check", "--config", r.cfg)
			out = r.fleetprov(0, nil, "reset", "--config", r.cfg)
			if !strings.Contains(out, "stays in its token") {
				t.Errorf("reset does not say the token key stays:\n%s", out)
			}
			if _, err := os.Stat(filepath.Join(r.creds, "priv_key")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a token key was written to a file: %v", err)
			}
			r.scan.addText(kindPIN, secretsPIN)
			r.scan.addText(kindPIN, secretsWrongPIN)
			r.finish(false, 1)
		})
	}
}

// pkcs11PluginBinary builds cmd/fleetprov-keystore-pkcs11, which needs
// cgo and a C compiler.
func pkcs11PluginBinary(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		if os.Getenv("FLEETPROV_REQUIRE_TOOLS") == "1" {
			t.Fatal("gcc not found; the PKCS#11 plugin needs cgo (FLEETPROV_REQUIRE_TOOLS=1 makes this a failure)")
		}
		t.Skip("skipping: gcc not found; the PKCS#11 plugin needs cgo")
	}
	needHost(t)
	bin := filepath.Join(t.TempDir(), "fleetprov-keystore-pkcs11")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/fleetprov/fleetprov/cmd/fleetprov-keystore-pkcs11")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the PKCS#11 plugin: %v\n%s", err, out)
	}
	return bin
}

// The search itself: it must see a key or token in the forms a leak
// takes, and must not take the public half of a key for the private one.
func TestLeakScanSeesEncodings(t *testing.T) {
	dir := t.TempDir()
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	writeKey := func(name string, key any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		b := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return b
	}
	ecPEM, rsaPEM := writeKey("ec", ecKey), writeKey("rsa", rsaKey)
	const token = "0f3a9c2e7b51d8640f3a9c2e7b51d8640f3a9c2e7b51d8641a2b3c4d5e6f7081"
	s := newLeakScan(func(string) []string { return nil })
	s.addKey(t, kindDeviceKey, filepath.Join(dir, "ec"))
	s.addKey(t, kindDeviceKey, filepath.Join(dir, "rsa"))
	s.addText(kindToken, token)

	// The RSA key as the cloud might send it: PKCS#1, not the file's PKCS#8.
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	payload, err := cbor.Marshal(map[string]string{"privateKey": string(pkcs1), "certificateOwnershipToken": token})
	if err != nil {
		t.Fatal(err)
	}
	ecDER, _ := x509.MarshalECPrivateKey(ecKey)
	leaks := map[string][]byte{
		"PEM in a text log line":     []byte("msg=answer key=" + strconv.Quote(string(ecPEM))),
		"PEM in a JSON log line":     mustJSON(t, map[string]string{"key": string(rsaPEM)}),
		"CBOR answer, raw":           payload,
		"CBOR answer, hex dump":      []byte(fmt.Sprintf("payload=% x", payload)),
		"CBOR answer, base64":        mustJSON(t, map[string][]byte{"payload": payload}),
		"SEC 1 DER in hex":           []byte("der=" + hex.EncodeToString(ecDER)),
		"half the PKCS#1 PEM":        pkcs1[len(pkcs1)/2:],
		"token cut to 20 characters": []byte("token=" + token[:20] + "..."),
		"token in base64":            []byte(base64.StdEncoding.EncodeToString([]byte("x=" + token))),
	}
	search := newSearcher(t, s.secrets)
	for name, data := range leaks {
		if len(search.find(data)) == 0 {
			t.Errorf("%s: no secret found", name)
		}
	}

	// Public material: the certificate-like encodings of the public keys.
	ecPub, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	rsaPub, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	for name, data := range map[string][]byte{
		"EC public key PEM":  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPub}),
		"RSA public key PEM": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPub}),
		"RSA public key hex": []byte(hex.EncodeToString(rsaPub)),
	} {
		for i, where := range search.find(data) {
			t.Errorf("%s taken for the %s (%s)", name, s.secrets[i].name, where)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fleetprov demo runs the emulator and the device in one process, both
// logging to the same stderr: at debug level, in both formats, it shows no
// secret either.
func TestNoSecretsInDemo(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, logFormat := range []string{"text", "json"} {
		t.Run("log-"+logFormat, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "demo")
			r := &secretsRun{t: t, self: self, dir: dir, logFormat: logFormat,
				cfg:     filepath.Join(dir, "config.yaml"),
				journal: filepath.Join(dir, "device", "journal"),
				creds:   filepath.Join(dir, "device", "credentials"),
				env:     append(os.Environ(), envBeCLI+"=1"),
			}
			r.scan = newLeakScan(r.fileAllows)
			out := r.fleetprov(0, nil, "demo", "--dir", dir)
			if !strings.Contains(out, "The cloud now lists") {
				t.Fatalf("demo did not provision:\n%s", out)
			}
			r.fleetprov(0, nil, "status", "--config", r.cfg, "--json")
			r.search(1)
		})
	}
}

// A run or a reset killed in the middle of writing (strace makes the
// kill land on a chosen rename) leaves a key in a temporary file, or the
// reset's plan, behind: each is 0600, and nothing of it reaches an output
// of the commands that follow. Nor does a damaged key file or journal
// reach the messages that report the damage.
func TestNoSecretsAfterKillsAndDamage(t *testing.T) {
	strace := requireStrace(t)
	for _, mode := range []string{"csr", "create-keys"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			r := newSecretsRun(t, "text", mode == "create-keys", nil, "FLEETPROV_CERTIFICATE_MODE="+mode)
			// The first rename a run makes is its device key's, into place:
			// killed there, the whole key is left in a temporary file.
			r.killedAtRename(strace, 1, "run", "--config", r.cfg)
			if temps, _ := filepath.Glob(filepath.Join(r.creds, ".priv_key.tmp-*")); len(temps) != 1 {
				t.Fatalf("temporary key files after the kill: %v, want one", temps)
			}
			r.fleetprov(0, nil, "run", "--config", r.cfg)
			r.status()
			// Reset's first rename puts its plan in place; the kill lands
			// on one of the moves that follow.
			r.killedAtRename(strace, 2, "reset", "--config", r.cfg)
			if _, err := os.Stat(r.journal + ".reset"); err != nil {
				t.Fatalf("no reset plan after the kill: %v", err)
			}
			r.status()
			r.fleetprov(0, nil, "reset", "--config", r.cfg)
			r.fleetprov(0, nil, "run", "--config", r.cfg)
			r.damaged()
			r.finish(true, 2)
		})
	}
}

// killedAtRename runs fleetprov under strace, which kills it with SIGKILL
// at its n-th renameat (counted per thread: at the n-th or a later one).
func (r *secretsRun) killedAtRename(strace string, n int, args ...string) {
	r.t.Helper()
	fp := r.command(nil, args...)
	cmd := exec.Command(strace, append([]string{"-f", "-qq", "-o", os.DevNull, "-e", "trace=renameat",
		"-e", fmt.Sprintf("inject=renameat:signal=SIGKILL:when=%d", n), fp.Path}, fp.Args[1:]...)...)
	cmd.Env = fp.Env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	name := r.collect(strings.Join(args, " ")+fmt.Sprintf(" (killed at rename %d)", n), nil, stdout.Bytes(), stderr.Bytes())
	// strace ends as its tracee did: killed by SIGKILL.
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		r.t.Fatalf("%s: %v, want killed by SIGKILL\nstdout:\n%s\nstderr:\n%s", name, err, stdout.String(), stderr.String())
	}
}

// requireStrace returns strace's path once it has shown it can trace
// here, or skips (fails with FLEETPROV_REQUIRE_TOOLS=1).
func requireStrace(t *testing.T) string {
	t.Helper()
	missing := func(why string) string {
		if os.Getenv("FLEETPROV_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s; FLEETPROV_REQUIRE_TOOLS=1 makes this a failure", why)
		}
		t.Skipf("skipping: %s", why)
		return ""
	}
	path, err := exec.LookPath("strace")
	if err != nil {
		return missing("strace not found on PATH (Debian: apt-get install strace)")
	}
	if out, err := exec.Command(path, "-f", "-qq", "-o", os.DevNull, "true").CombinedOutput(); err != nil {
		return missing(fmt.Sprintf("strace cannot trace here (%v: %s)", err, bytes.TrimSpace(out)))
	}
	return path
}

// damaged replaces the provisioned key by another key, then by half of
// itself, then tears a copy of the journal record holding the token onto
// the journal's end, running status, run and config check on each; then
// puts everything back.
func (r *secretsRun) damaged() {
	t := r.t
	t.Helper()
	key := filepath.Join(r.creds, "priv_key")
	good, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	// A key of no certificate's, as a mix-up of files would leave there.
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherDER, err := x509.MarshalPKCS8PrivateKey(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	other := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: otherDER})
	check := func(runCode int) {
		t.Helper()
		r.fleetprov(0, nil, "status", "--config", r.cfg)
		r.fleetprov(0, nil, "status", "--config", r.cfg, "--json")
		r.fleetprov(runCode, nil, "run", "--config", r.cfg)
		r.fleetprov(0, nil, "config", "check", "--config", r.cfg)
	}
	for _, bad := range [][]byte{other, good[:len(good)/2]} {
		if err := os.WriteFile(key, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		check(1)
	}
	if err := os.WriteFile(key, good, 0o600); err != nil {
		t.Fatal(err)
	}

	journal, err := os.ReadFile(r.journal)
	if err != nil {
		t.Fatal(err)
	}
	var withToken []byte
	for _, line := range bytes.SplitAfter(journal, []byte("\n")) {
		if bytes.Contains(line, []byte(`"certificateOwnershipToken"`)) {
			withToken = line
		}
	}
	if withToken == nil {
		t.Fatal("no journal record holds the token")
	}
	cut := bytes.Index(withToken, []byte(`"certificateOwnershipToken"`)) + 60
	if err := os.WriteFile(r.journal, append(slices.Clone(journal), withToken[:cut]...), 0o600); err != nil {
		t.Fatal(err)
	}
	check(0)
	if err := os.WriteFile(r.journal, journal, 0o600); err != nil {
		t.Fatal(err)
	}
}
