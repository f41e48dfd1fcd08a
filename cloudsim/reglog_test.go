package cloudsim

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// envServeDir makes the test binary serve an emulator directory until it
// is killed: the kill-under-load test's `cloud serve`.
const envServeDir = "CLOUDSIM_TEST_SERVE_DIR"

// envCompactAt sets that serve's log size that starts a compaction.
const envCompactAt = "CLOUDSIM_TEST_COMPACT_AT"

func TestMain(m *testing.M) {
	if dir := os.Getenv(envServeDir); dir != "" {
		srv, err := Open(Options{Dir: dir})
		if at := os.Getenv(envCompactAt); at != "" && err == nil {
			srv.compactAt, err = strconv.ParseInt(at, 10, 64)
		}
		if err == nil {
			err = srv.Start()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("serving")
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		_ = srv.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Every acknowledged change is in the registry a reader in another process
// sees while the emulator serves (snapshot plus log), and in the snapshot
// alone once the emulator has started again.
func TestRegistryLogKeepsEveryChange(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	var devs []provisioned
	for i := range 5 {
		p := createCert(t, c)
		register(t, c, &p, fmt.Sprintf("log%d", i))
		devs = append(devs, p)
	}
	pending := createCert(t, c)
	check := func(when string) {
		t.Helper()
		reg, err := ReadRegistry(e.dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range devs {
			if cert := reg.Certificates[p.certID]; cert == nil || cert.Status != StatusActive || cert.ThingName != p.thingName {
				t.Errorf("%s: certificate %s is %+v, want ACTIVE for %s", when, p.certID, cert, p.thingName)
			}
			if th := reg.Things[p.thingName]; th == nil || len(th.Principals) != 1 || th.Principals[0] != p.certID {
				t.Errorf("%s: thing %s is %+v", when, p.thingName, th)
			}
		}
		if cert := reg.Certificates[pending.certID]; cert == nil || cert.Status != StatusPendingActivation {
			t.Errorf("%s: pending certificate is %+v", when, cert)
		}
		if tok := reg.Tokens[devs[0].token]; tok == nil || tok.UsedAt == nil || tok.ThingName != devs[0].thingName {
			t.Errorf("%s: used token is %+v", when, tok)
		}
	}
	check("while serving")
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := startEnv(t, Options{Dir: e.dir})
	check("after a restart")
	log, err := os.ReadFile(filepath.Join(e2.dir, fileRegistryLog))
	if err != nil {
		t.Fatal(err)
	}
	if empty, _ := newLog(e2.srv.reg.Generation); !bytes.Equal(log, empty) {
		t.Errorf("registry.log holds %d bytes after a restart, want only its header (%d): the start folds it into the snapshot", len(log), len(empty))
	}
}

// A change cut short by a crash leaves a torn last line, which is ignored;
// so is a log the snapshot already holds.
func TestRegistryLogTornAndStale(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	p := createCert(t, c)
	register(t, c, &p, "torn")
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(e.dir, fileRegistryLog)
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	ghost, err := regEnc.Marshal(logRecord{Kind: kindThing, Key: "ghost", Thing: &Thing{Name: "ghost"}})
	if err != nil {
		t.Fatal(err)
	}
	torn := appendFrame(nil, ghost)
	if _, err := f.Write(torn[:len(torn)-3]); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	reg, err := ReadRegistry(e.dir)
	if err != nil {
		t.Fatalf("torn tail: %v", err)
	}
	if reg.Things["gg_torn"] == nil || reg.Things["ghost"] != nil {
		t.Errorf("torn tail: things %v, want gg_torn and no ghost", reg.SortedThings())
	}

	// A snapshot of a newer generation than the log already holds it (a
	// start that crashed between writing the snapshot and the new log).
	snap := reg
	snap.Things["gg_torn"].Attributes = map[string]string{"in": "snapshot"}
	snap.Generation++
	if err := writeSnapshot(e.dir, snap); err != nil {
		t.Fatal(err)
	}
	reg, err = ReadRegistry(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := reg.Things["gg_torn"].Attributes["in"]; got != "snapshot" {
		t.Errorf("a stale log was applied over a newer snapshot")
	}
	e2 := startEnv(t, Options{Dir: e.dir})
	if th := e2.srv.reg.Things["gg_torn"]; th == nil || th.Attributes["in"] != "snapshot" {
		t.Errorf("after start: %+v", th)
	}
}

// heldLog opens the registry log of a fresh emulator directory, its first
// fsync held until release is closed; entered hears of every fsync.
func heldLog(t *testing.T) (l *regLog, dir string, entered, release chan struct{}) {
	t.Helper()
	dir = initDir(t)
	reg, err := ReadRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := compact(dir, reg); err != nil {
		t.Fatal(err)
	}
	l, err = openRegLog(dir, -1)
	if err != nil {
		t.Fatal(err)
	}
	entered, release = make(chan struct{}, 16), make(chan struct{})
	var once sync.Once
	l.sync = func(f *os.File) error {
		entered <- struct{}{}
		once.Do(func() { <-release })
		return f.Sync()
	}
	return l, dir, entered, release
}

// policyRecord is a change to log: policy p<i>.
func policyRecord(i int) []logRecord {
	return []logRecord{{Kind: kindPolicy, Key: fmt.Sprintf("p%d", i), Policy: []byte(`{"Version":"2012-10-17","Statement":[]}`)}}
}

// One fsync covers every change that arrives while the previous one runs.
func TestRegistryGroupCommit(t *testing.T) {
	l, dir, entered, release := heldLog(t)
	first := l.append(policyRecord(0))
	<-entered // the first fsync is running, and held
	var rest []<-chan error
	for i := 1; i < 10; i++ {
		rest = append(rest, l.append(policyRecord(i)))
	}
	close(release)
	for _, ch := range append(rest, first) {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	if appends, syncs := l.counts(); appends != 10 || syncs != 2 {
		t.Errorf("%d appends took %d fsyncs, want 10 in 2", appends, syncs)
	}
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	got, err := ReadRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Policies) != 10 {
		t.Errorf("the log holds %d policies, want 10", len(got.Policies))
	}
}

// Once commits are seen to arrive together, a round waits a moment for
// company before its fsync; a change that comes alone is written at once.
func TestRegistryCommitGathersOnlyUnderLoad(t *testing.T) {
	l, _, entered, release := heldLog(t)
	var mu sync.Mutex
	var pauses []time.Duration
	l.pause = func(d time.Duration) {
		mu.Lock()
		pauses = append(pauses, d)
		mu.Unlock()
	}
	paused := func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(pauses)
	}
	wait := func(chs ...<-chan error) {
		t.Helper()
		for _, ch := range chs {
			if err := <-ch; err != nil {
				t.Fatal(err)
			}
		}
	}
	// A lone change: written at once.
	first := l.append(policyRecord(0))
	<-entered
	// Nine arrive while its fsync runs: the next round carries them all,
	// and was not delayed (the round before it was alone).
	var crowd []<-chan error
	for i := 1; i < 10; i++ {
		crowd = append(crowd, l.append(policyRecord(i)))
	}
	close(release)
	wait(first)
	<-entered
	wait(crowd...)
	if got := paused(); len(got) != 0 {
		t.Fatalf("paused %v before rounds that followed a lone change", got)
	}
	// The next change follows a crowded round: its round waits first.
	wait(l.append(policyRecord(10)))
	<-entered
	if got := paused(); len(got) != 1 || got[0] != commitGather {
		t.Fatalf("paused %v after a round of nine, want once for %v", got, commitGather)
	}
	// And the one after, following a lone change, does not.
	wait(l.append(policyRecord(11)))
	<-entered
	if got := paused(); len(got) != 1 {
		t.Fatalf("paused %v; a round after a lone change waited", got)
	}
	if appends, syncs := l.counts(); appends != 12 || syncs != 4 {
		t.Errorf("%d appends took %d fsyncs, want 12 in 4", appends, syncs)
	}
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
}

// An answer goes out only once its change is durable; meanwhile CONNECTs
// and policy checks go on, since they never wait on the disk.
func TestAnswerWaitsForDurability(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	e.srv.regLog.mu.Lock()
	e.srv.regLog.sync = func(f *os.File) error {
		select {
		case held <- struct{}{}:
			<-release
		default:
		}
		return f.Sync()
	}
	e.srv.regLog.mu.Unlock()

	answered := make(chan string, 1)
	go func() {
		key := newKey(t)
		res, _, _ := c.callWait(topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, key)}, waitLimit)
		answered <- res
	}()
	<-held
	// The change is applied but not durable: a new device connects and
	// is held to its policy all the same.
	other, err := e.dialWithID(t, e.claimCert(t), randomID())
	if err != nil {
		t.Fatalf("CONNECT while a commit waits for the disk: %v", err)
	}
	if err := other.subscribe("devices/#"); err == nil {
		t.Error("a policy check while a commit waits for the disk allowed what the claim policy does not")
	}
	select {
	case res := <-answered:
		t.Fatalf("answered %q before the change was durable", res)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if res := <-answered; res != "accepted" {
		t.Errorf("answer %q, want accepted", res)
	}
}

// serve is a `cloud serve` of dir in a process of its own, which the test
// can kill.
func serveProcess(t *testing.T, dir string, env ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), envServeDir+"="+dir), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "serving\n" {
		t.Fatalf("serve process: %q %v", line, err)
	}
	return cmd
}

// SIGKILL of the serving process while devices provision loses nothing it
// acknowledged: every certificate a device was given, and every thing a
// device was told it registered, is in the registry afterwards.
func TestKillServeUnderLoadLosesNothingAcknowledged(t *testing.T) {
	killServeUnderLoad(t, initDir(t), nil)
}

// The same with the log folded into a new snapshot every few changes
// while devices provision: a kill at any point of a compaction (before
// the log's rotation, between it and the new snapshot, after) loses
// nothing acknowledged.
func TestKillServeWhileCompactingLosesNothingAcknowledged(t *testing.T) {
	dir := initDir(t)
	before, err := ReadRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Killed once serve has compacted a few times, so most likely in
	// the middle of another.
	killServeUnderLoad(t, dir, func(r *Registry) bool { return r.Generation >= before.Generation+4 }, envCompactAt+"=4096")
}

// killServeUnderLoad runs serve on dir in a process of its own with
// environ, provisions devices against it and kills it in the thick of it,
// once until holds of the registry if it is given.
func killServeUnderLoad(t *testing.T, dir string, until func(*Registry) bool, environ ...string) {
	st := readSettings(t, dir)
	srv := serveProcess(t, dir, environ...)
	e := &env{dir: dir, addr: st.Listen}
	claim := e.claimCert(t)

	const devices = 40
	type told struct {
		certID, thing string
	}
	var (
		mu       sync.Mutex
		answers  []told
		accepted = make(chan struct{}, devices*2)
	)
	var wg sync.WaitGroup
	for i := range devices {
		wg.Go(func() {
			for round := 0; ; round++ {
				c, err := e.dialWithID(t, claim, randomID())
				if err != nil {
					return // the emulator is gone
				}
				p, ok := tryProvision(c, fmt.Sprintf("k%02d_%03d", i, round), func(certID string) {
					mu.Lock()
					answers = append(answers, told{certID: certID})
					mu.Unlock()
					select {
					case accepted <- struct{}{}:
					default: // enough counted; the load goes on
					}
				})
				if !ok {
					return
				}
				mu.Lock()
				answers = append(answers, told{certID: p.certID, thing: p.thingName})
				mu.Unlock()
			}
		})
	}
	// Kill it in the thick of it.
	for range devices {
		<-accepted
	}
	if until != nil {
		deadline := time.Now().Add(waitLimit)
		for {
			reg, err := ReadRegistry(dir)
			if err != nil {
				t.Fatal(err)
			}
			if until(reg) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("still not there after %v: registry generation %d", waitLimit, reg.Generation)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = srv.Wait()
	wg.Wait()

	reg, err := ReadRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	things := 0
	for _, a := range answers {
		cert := reg.Certificates[a.certID]
		if cert == nil {
			t.Errorf("certificate %s was given to a device but is not in the registry", a.certID)
			continue
		}
		if a.thing == "" {
			continue
		}
		things++
		if cert.Status != StatusActive || cert.ThingName != a.thing || reg.Things[a.thing] == nil {
			t.Errorf("thing %s was acknowledged but the registry has certificate %+v, thing %+v", a.thing, cert, reg.Things[a.thing])
		}
	}
	t.Logf("%d certificates and %d registrations acknowledged before the kill, all in the registry (generation %d)", len(answers)-things, things, reg.Generation)
	// And the emulator starts again from it.
	startEnv(t, Options{Dir: dir, Listen: "127.0.0.1:0"})
}

// tryProvision runs CreateCertificateFromCsr and RegisterThing, calling
// issued when the certificate is acknowledged; ok is false once the
// emulator stops answering.
func tryProvision(c *client, serial string, issued func(certID string)) (provisioned, bool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return provisioned{}, false
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "load"}}, key)
	if err != nil {
		return provisioned{}, false
	}
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	res, payload, err := c.callWait(topicCSR, map[string]any{"certificateSigningRequest": csr}, waitLimit)
	if err != nil || res != "accepted" {
		return provisioned{}, false
	}
	body := decodeAnswer(payload)
	p := provisioned{certID: body["certificateId"].(string), token: body["certificateOwnershipToken"].(string)}
	issued(p.certID)
	res, payload, err = c.callWait(topicRegister, map[string]any{
		"certificateOwnershipToken": p.token,
		"parameters":                map[string]any{"SerialNumber": serial},
	}, waitLimit)
	if err != nil || res != "accepted" {
		return provisioned{}, false
	}
	p.thingName, _ = decodeAnswer(payload)["thingName"].(string)
	return p, true
}

func decodeAnswer(payload []byte) map[string]any {
	m := map[string]any{}
	_ = json.Unmarshal(payload, &m)
	return m
}

// fillRegistry makes a registry of n provisioned devices, as the log and
// snapshot hold them.
func fillRegistry(b testing.TB, dir string, n int) {
	b.Helper()
	reg, err := ReadRegistry(dir)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	pem := strings.Repeat("A", 700)
	for i := range n {
		id := fmt.Sprintf("%064x", i+1)
		name := fmt.Sprintf("gg_bench_%06d", i)
		used := now
		reg.Certificates[id] = &Certificate{ID: id, Status: StatusActive, ThingName: name, Policies: []string{"GreengrassV2IoTThingPolicy"}, CreatedAt: now, PEM: pem}
		reg.Tokens[fmt.Sprintf("%064x", i+1<<32)] = &Token{CertificateID: id, IssuedAt: now, UsedAt: &used, ThingName: name, DeviceConfiguration: map[string]string{"x": "y"}}
		reg.Things[name] = &Thing{Name: name, Attributes: map[string]string{"SerialNumber": name}, Groups: []string{}, Principals: []string{id}, CreatedAt: now}
	}
	if err := compact(dir, reg); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRegistryLoad10k is a start of the emulator with 10,000 devices
// registered, up to listening: after a clean stop (all in the snapshot),
// and after a SIGKILL (all in the log, which the start folds into a new
// snapshot).
func BenchmarkRegistryLoad10k(b *testing.B) {
	for _, where := range []string{"snapshot", "log"} {
		b.Run("in="+where, func(b *testing.B) {
			dir := b.TempDir()
			if err := Init(InitOptions{Dir: dir, Listen: "127.0.0.1:1"}); err != nil {
				b.Fatal(err)
			}
			if where == "snapshot" {
				fillRegistry(b, dir, 10_000)
			} else {
				logRegistry(b, dir, 10_000)
			}
			snap, err := os.ReadFile(filepath.Join(dir, fileRegistry))
			if err != nil {
				b.Fatal(err)
			}
			log, err := os.ReadFile(filepath.Join(dir, fileRegistryLog))
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				if err := os.WriteFile(filepath.Join(dir, fileRegistry), snap, 0o600); err != nil {
					b.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, fileRegistryLog), log, 0o600); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				srv, err := Open(Options{Dir: dir})
				if err != nil {
					b.Fatal(err)
				}
				if err := srv.openRegistry(); err != nil {
					b.Fatal(err)
				}
				if len(srv.reg.Things) != 10_000 {
					b.Fatalf("%d things", len(srv.reg.Things))
				}
				_ = srv.regLog.close()
			}
		})
	}
}

// logRegistry logs n provisioned devices, as a SIGKILL of serve leaves
// them: each device's certificate and token, then its registration.
func logRegistry(b testing.TB, dir string, n int) {
	b.Helper()
	l, err := openRegLog(dir, -1)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	pem := strings.Repeat("A", 700)
	var done []<-chan error
	for i := range n {
		id := fmt.Sprintf("%064x", i+1)
		tok := fmt.Sprintf("%064x", i+1<<32)
		name := fmt.Sprintf("gg_bench_%06d", i)
		used := now
		issued := []logRecord{
			{Kind: kindCert, Key: id, Cert: &Certificate{ID: id, Status: StatusPendingActivation, Policies: []string{}, CreatedAt: now, PEM: pem}},
			{Kind: kindToken, Key: tok, Token: &Token{CertificateID: id, IssuedAt: now}},
		}
		registered := []logRecord{
			{Kind: kindCert, Key: id, Cert: &Certificate{ID: id, Status: StatusActive, ThingName: name, Policies: []string{"GreengrassV2IoTThingPolicy"}, CreatedAt: now, PEM: pem}},
			{Kind: kindToken, Key: tok, Token: &Token{CertificateID: id, IssuedAt: now, UsedAt: &used, ThingName: name, DeviceConfiguration: map[string]string{"x": "y"}}},
			{Kind: kindThing, Key: name, Thing: &Thing{Name: name, Attributes: map[string]string{"SerialNumber": name}, Groups: []string{}, Principals: []string{id}, CreatedAt: now}},
		}
		// Not waited for one by one: group commit gathers them.
		l.append(issued)
		done = append(done, l.append(registered))
	}
	for _, ch := range done {
		if err := <-ch; err != nil {
			b.Fatal(err)
		}
	}
	if err := l.close(); err != nil {
		b.Fatal(err)
	}
}

// A change made to the registry between Open and Start (here by
// update-certificate, which needs the directory unlocked) is what Start
// serves: Start reads the registry again unless its files are the ones
// Open read.
func TestStartSeesChangesSinceOpen(t *testing.T) {
	dir := initDir(t)
	st := readSettings(t, dir)
	srv, err := Open(Options{Dir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.reg.Certificates[st.ClaimCertificateID].Status; got != StatusActive {
		t.Fatalf("claim is %s at Open", got)
	}
	if _, err := UpdateCertificate(dir, st.ClaimCertificateID, StatusInactive); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if got := srv.reg.Certificates[st.ClaimCertificateID].Status; got != StatusInactive {
		t.Errorf("claim is %s once started, want the INACTIVE set after Open", got)
	}
}

// BenchmarkRegistryCommit is one device's CreateCertificate change made
// durable, with 10,000 devices already registered: the cost must not grow
// with the registry.
func BenchmarkRegistryCommit(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("registered=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			addr, err := FreePort()
			if err != nil {
				b.Fatal(err)
			}
			if err := Init(InitOptions{Dir: dir, Listen: addr}); err != nil {
				b.Fatal(err)
			}
			fillRegistry(b, dir, n)
			srv, err := Open(Options{Dir: dir})
			if err != nil {
				b.Fatal(err)
			}
			if err := srv.openRegistry(); err != nil {
				b.Fatal(err)
			}
			defer srv.regLog.close()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				i++
				id := fmt.Sprintf("%064x", 1<<40+i)
				rej := srv.commit(func(tx *regTx) *Rejection {
					tx.putCert(&Certificate{ID: id, Status: StatusPendingActivation, Policies: []string{}, CreatedAt: time.Now(), PEM: "x"})
					tx.putToken(id, &Token{CertificateID: id, IssuedAt: time.Now()})
					return nil
				})
				if rej != nil {
					b.Fatal(rej)
				}
			}
		})
	}
}

// A change that cannot be made durable is not acknowledged, and nor is any
// later one: the emulator answers 500 until restarted, rather than tell a
// device something a restart would forget.
func TestRegistrySaveFailureRefusesChanges(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	e.srv.regLog.mu.Lock()
	e.srv.regLog.sync = func(*os.File) error { return errors.New("disk full") }
	e.srv.regLog.mu.Unlock()
	want := map[string]any{"statusCode": 500.0, "errorCode": "InternalFailure", "errorMessage": "Internal failure: the emulator could not save its registry."}
	for i := range 2 {
		key := newKey(t)
		res, body := c.call(topicCSR, map[string]any{"certificateSigningRequest": csrPEM(t, key)})
		if res != "rejected" || !reflect.DeepEqual(body, want) {
			t.Errorf("request %d: %s %v, want rejected %v", i+1, res, body, want)
		}
	}
}

// A directory an earlier version left after a crash (a JSON snapshot and
// a log of checksummed JSON lines, a torn one last) starts with every
// change in it, and the start rewrites both in CBOR.
func TestRegistryReadsEarlierJSONFormat(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	p := createCert(t, c)
	register(t, c, &p, "legacy")
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	reg, err := ReadRegistry(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	// The snapshot holds the claim only; the device is in the log.
	snap := newRegistry()
	snap.Generation = reg.Generation
	for id, cert := range reg.Certificates {
		if cert.Claim {
			snap.Certificates[id] = cert
		}
	}
	writeJSONFormat(t, e.dir, snap, `1234abcd {"t":"thing","k":"ghost","v":{"thingName":"gh`,
		logHeader{Generation: reg.Generation},
		jsonLogRecord{Kind: kindCert, Key: p.certID, V: mustJSON(t, reg.Certificates[p.certID])},
		jsonLogRecord{Kind: kindToken, Key: p.token, V: mustJSON(t, reg.Tokens[p.token])},
		jsonLogRecord{Kind: kindThing, Key: p.thingName, V: mustJSON(t, reg.Things[p.thingName])})

	got, err := ReadRegistry(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Certificates, reg.Certificates) || !reflect.DeepEqual(got.Things, reg.Things) || !reflect.DeepEqual(got.Tokens, reg.Tokens) {
		t.Errorf("read from the JSON format:\n%+v\nwant\n%+v", got, reg)
	}
	e2 := startEnv(t, Options{Dir: e.dir})
	if cert := e2.srv.reg.Certificates[p.certID]; cert == nil || cert.Status != StatusActive || e2.srv.reg.Things[p.thingName] == nil || e2.srv.reg.Things["ghost"] != nil {
		t.Errorf("after start: certificate %+v, things %v", cert, e2.srv.reg.SortedThings())
	}
	if _, err := os.Stat(filepath.Join(e.dir, fileRegistryJSON)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("registry.json still there after the start rewrote the registry: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(e.dir, fileRegistryLog)); err != nil || !bytes.HasPrefix(b, logMagic) {
		t.Errorf("registry.log is not in the current format after the start: %q %v", b, err)
	}
}

// A directory an earlier version stopped cleanly (a JSON snapshot, a JSON
// log holding only its header) is rewritten by the start, so that the
// changes made after are appended to a log a reader can read.
func TestStartRewritesEarlierJSONFormat(t *testing.T) {
	e := startEnv(t, Options{})
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	reg, err := ReadRegistry(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	writeJSONFormat(t, e.dir, reg, "", logHeader{Generation: reg.Generation})
	e2 := startEnv(t, Options{Dir: e.dir})
	c := e2.dialClaim(t)
	p := createCert(t, c)
	register(t, c, &p, "after_upgrade")
	// Read while serving, as after a crash now.
	got, err := ReadRegistry(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Things[p.thingName] == nil {
		t.Errorf("a thing registered after the start on a JSON registry is not in the registry")
	}
	if _, err := os.Stat(filepath.Join(e.dir, fileRegistryJSON)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("registry.json still there after the start: %v", err)
	}
}

// writeJSONFormat leaves dir as an earlier version did: snap as
// registry.json and no registry.cbor, and a log of lines, each a checksum
// and the line's JSON, then tail (a torn line, or "").
func writeJSONFormat(t *testing.T, dir string, snap any, tail string, lines ...any) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, fileRegistryJSON), mustJSON(t, snap), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, fileRegistry)); err != nil {
		t.Fatal(err)
	}
	var log []byte
	for _, l := range lines {
		b := mustJSON(t, l)
		log = fmt.Appendf(log, "%x %s\n", crc32.Checksum(b, castagnoli), b)
	}
	if err := os.WriteFile(filepath.Join(dir, fileRegistryLog), append(log, tail...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// readSettings reads the emulator directory's cloud.json.
func readSettings(t *testing.T, dir string) settings {
	t.Helper()
	var st settings
	b, err := os.ReadFile(filepath.Join(dir, fileSettings))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The registry reads back exactly as written, times to the nanosecond
// with their zone, and 200,000 entries in one map (beyond the CBOR
// decoder's default limit).
func TestRegistryRoundTrip(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 12, 1, 10, 11, 12, 123456789, time.FixedZone("", 3600)) // as parsed: an offset, no zone name
	r := newRegistry()
	r.Generation = 7
	r.Things["a"] = &Thing{Name: "a", Attributes: map[string]string{"k": "v"}, Groups: []string{}, Principals: []string{"c"}, CreatedAt: at}
	r.Certificates["c"] = &Certificate{ID: "c", Status: StatusActive, ThingName: "a", Policies: []string{"p"}, CreatedAt: at, PEM: "-----BEGIN CERTIFICATE-----\nx\n"}
	r.Tokens["t"] = &Token{CertificateID: "c", IssuedAt: at, UsedAt: &at, ThingName: "a", DeviceConfiguration: map[string]string{"x": "y"}}
	r.Policies["p"] = json.RawMessage(`{"Version":"2012-10-17"}`)
	for i := range 200_000 {
		r.Tokens[fmt.Sprint(i)] = &Token{CertificateID: "c", IssuedAt: at}
	}
	if err := writeSnapshot(dir, r); err != nil {
		t.Fatal(err)
	}
	got, err := readSnapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("read back differs:\n%+v\n%+v\nwant\n%+v\n%+v", got.Things["a"], got.Tokens["t"], r.Things["a"], r.Tokens["t"])
	}
}

// A crash between a compaction's rotation of the log and its new snapshot
// leaves the old snapshot, the rotated-out log (registry.log.prev) and the
// new log: a reader and a start put every acknowledged change together
// from them, and the start leaves one snapshot and an empty log.
func TestCrashMidCompactionLosesNothing(t *testing.T) {
	e := startEnv(t, Options{})
	rotated, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.srv.mu.Lock()
	e.srv.compactAt = 1 // the first change starts one
	e.srv.afterRotate = func() {
		once.Do(func() {
			close(rotated)
			<-release
		})
	}
	e.srv.mu.Unlock()
	c := e.dialClaim(t)
	before := createCert(t, c) // logged, then the log is rotated
	<-rotated
	register(t, c, &before, "mid_a") // into the new log
	after := createCert(t, c)
	register(t, c, &after, "mid_b")

	// A crash now: what is on disk at this moment.
	crashed := t.TempDir()
	if err := os.CopyFS(crashed, os.DirFS(e.dir)); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{fileRegistryLogPrev, fileRegistryLog} {
		if _, err := os.Stat(filepath.Join(crashed, f)); err != nil {
			t.Fatalf("mid-compaction: %v", err)
		}
	}
	close(release)

	check := func(when string, reg *Registry) {
		t.Helper()
		for _, p := range []provisioned{before, after} {
			cert := reg.Certificates[p.certID]
			if cert == nil || cert.Status != StatusActive || cert.ThingName != p.thingName || reg.Things[p.thingName] == nil {
				t.Errorf("%s: %s has certificate %+v, thing %+v", when, p.thingName, cert, reg.Things[p.thingName])
			}
		}
	}
	reg, err := ReadRegistry(crashed)
	if err != nil {
		t.Fatal(err)
	}
	check("read after the crash", reg)
	e2 := startEnv(t, Options{Dir: crashed})
	check("started after the crash", e2.srv.reg)
	if err := e2.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(crashed, fileRegistryLogPrev)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("registry.log.prev still there after a start: %v", err)
	}
	snapOnly, err := readSnapshot(crashed)
	if err != nil {
		t.Fatal(err)
	}
	check("snapshot after the start", snapOnly)

	// And the compaction that was held completes: the live directory has
	// the new snapshot, no rotated-out log, and still everything.
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if n := e.srv.compactions.Load(); n < 1 {
		t.Errorf("%d compactions while serving, want at least 1", n)
	}
	if _, err := os.Stat(filepath.Join(e.dir, fileRegistryLogPrev)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("registry.log.prev still there after the compaction: %v", err)
	}
	reg, err = ReadRegistry(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	check("after the compaction", reg)
}

// A start after a crash appends to the log the crash left, after cutting
// off its torn tail, without writing a snapshot first; what it appends
// is read back.
func TestStartAfterCrashAppendsToTheLog(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dialClaim(t)
	first := createCert(t, c)
	register(t, c, &first, "crash_a")
	// A crash now, in the middle of an append.
	crashed := t.TempDir()
	if err := os.CopyFS(crashed, os.DirFS(e.dir)); err != nil {
		t.Fatal(err)
	}
	ghost, err := regEnc.Marshal(logRecord{Kind: kindThing, Key: "ghost", Thing: &Thing{Name: "ghost"}})
	if err != nil {
		t.Fatal(err)
	}
	torn := appendFrame(nil, ghost)
	f, err := os.OpenFile(filepath.Join(crashed, fileRegistryLog), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(torn[:len(torn)-3]); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	snapBefore, err := os.ReadFile(filepath.Join(crashed, fileRegistry))
	if err != nil {
		t.Fatal(err)
	}

	e2 := startEnv(t, Options{Dir: crashed})
	if snap, err := os.ReadFile(filepath.Join(crashed, fileRegistry)); err != nil || !bytes.Equal(snap, snapBefore) {
		t.Errorf("the start rewrote the snapshot (%v): it only needs to read", err)
	}
	c2 := e2.dialClaim(t)
	second := createCert(t, c2)
	register(t, c2, &second, "crash_b")
	reg, err := ReadRegistry(crashed) // as after another crash now
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []provisioned{first, second} {
		if cert := reg.Certificates[p.certID]; cert == nil || cert.Status != StatusActive || reg.Things[p.thingName] == nil {
			t.Errorf("%s: certificate %+v, thing %+v", p.thingName, cert, reg.Things[p.thingName])
		}
	}
	if reg.Things["ghost"] != nil {
		t.Error("the torn record was applied")
	}
}
