package states

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
)

// No test may reach the machine's own system bus (it would restart the
// developer's services) or read its own cgroup (CI may run inside a
// service): the restart tests set their bus and cgroup file themselves.
func TestMain(m *testing.M) {
	systemBusAddress = "unix:path=" + filepath.Join(os.TempDir(), "fleetprov-no-bus", "socket")
	procSelfCgroup = ""
	os.Exit(m.Run())
}

// useBus points the restart at addr (and a cgroup file saying cgroup)
// for one test.
func useBus(t testing.TB, addr, cgroup string) {
	t.Helper()
	oldAddr, oldCgroup := systemBusAddress, procSelfCgroup
	t.Cleanup(func() { systemBusAddress, procSelfCgroup = oldAddr, oldCgroup })
	systemBusAddress = addr
	procSelfCgroup = ""
	if cgroup != "" {
		procSelfCgroup = filepath.Join(t.TempDir(), "cgroup")
		if err := os.WriteFile(procSelfCgroup, []byte(cgroup), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// startBus runs a private dbus-daemon (Debian's) for one test and
// returns its address.
func startBus(t testing.TB) string {
	t.Helper()
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		if os.Getenv("FLEETPROV_REQUIRE_TOOLS") == "1" {
			t.Fatal("dbus-daemon not found (FLEETPROV_REQUIRE_TOOLS=1 makes this a failure): apt-get install dbus-daemon")
		}
		t.Skip("dbus-daemon not found: the D-Bus restart is tested against a private bus; apt-get install dbus-daemon")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "bus.conf")
	// A bus of our own: EXTERNAL authentication as on the system bus, and
	// no policy in the way of the stand-in systemd.
	if err := os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=`+filepath.Join(dir, "socket")+`</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(daemon, "--config-file="+conf, "--nofork", "--nopidfile", "--print-address")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		addr <- strings.TrimSpace(line)
	}()
	select {
	case a := <-addr:
		if a == "" {
			t.Fatalf("dbus-daemon printed no address: %s", stderr.String())
		}
		return a
	case <-time.After(60 * time.Second):
		t.Fatalf("dbus-daemon printed no address in 60 s: %s", stderr.String())
		return ""
	}
}

// fakeSystemd is the part of systemd's Manager a restart uses, on a
// private bus: it records each RestartUnit call and answers it with
// JobRemoved carrying the result chosen for the unit.
type fakeSystemd struct {
	conn *dbus.Conn

	mu      sync.Mutex
	events  []string          // "RestartUnit <unit> <mode>", "JobRemoved <unit> <result>"
	results map[string]string // unit -> job result; a unit not listed is unknown to systemd
	silent  map[string]bool   // units whose job never ends (no JobRemoved)
	jobs    uint32
	// What GetUnitByPID answers: the unit this process runs in ("" for
	// none) and its state.
	self, selfState string
	after           map[string][]string // unit -> its After=
	// resultDelay holds each JobRemoved back, so that a client that does
	// not wait for it would be seen calling on early.
	resultDelay time.Duration
}

func startFakeSystemd(t testing.TB, addr string, f *fakeSystemd) *fakeSystemd {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("connect to the test bus: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	f.conn = conn
	const manager = "org.freedesktop.systemd1.Manager"
	if err := conn.ExportMethodTable(map[string]any{
		"RestartUnit":  f.restartUnit,
		"GetUnitByPID": f.getUnitByPID,
	}, "/org/freedesktop/systemd1", manager); err != nil {
		t.Fatal(err)
	}
	units := map[string]bool{}
	for u := range f.results {
		units[u] = true
	}
	if f.self != "" {
		units[f.self] = true
	}
	for u := range units {
		state := "active"
		if u == f.self {
			state = f.selfState
		}
		if _, err := prop.Export(conn, unitObject(u), prop.Map{"org.freedesktop.systemd1.Unit": {
			"After":       {Value: append([]string{}, f.after[u]...), Emit: prop.EmitFalse},
			"ActiveState": {Value: state, Emit: prop.EmitFalse},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	reply, err := conn.RequestName("org.freedesktop.systemd1", dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own org.freedesktop.systemd1: reply %v, %v", reply, err)
	}
	return f
}

func unitObject(unit string) dbus.ObjectPath {
	return dbus.ObjectPath("/org/freedesktop/systemd1/unit/" + sdbus.PathBusEscape(unit))
}

func (f *fakeSystemd) restartUnit(name, mode string) (dbus.ObjectPath, *dbus.Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, "RestartUnit "+name+" "+mode)
	if name == "refused.service" { // as systemd answers a caller that is not root
		return "", dbus.NewError("org.freedesktop.DBus.Error.InteractiveAuthorizationRequired", []any{"Interactive authentication required."})
	}
	if strings.HasPrefix(name, "-") {
		return "", dbus.NewError("org.freedesktop.DBus.Error.InvalidArgs", []any{"Unit name " + name + " is not valid."})
	}
	result, ok := f.results[name]
	if !ok {
		return "", dbus.NewError("org.freedesktop.systemd1.NoSuchUnit", []any{"Unit " + name + " not found."})
	}
	f.jobs++
	id := f.jobs
	job := dbus.ObjectPath(fmt.Sprintf("/org/freedesktop/systemd1/job/%d", id))
	if !f.silent[name] {
		// After the reply, as systemd does: the job ends later.
		go func() {
			time.Sleep(f.resultDelay)
			f.mu.Lock()
			f.events = append(f.events, "JobRemoved "+name+" "+result)
			f.mu.Unlock()
			_ = f.conn.Emit("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager.JobRemoved", id, job, name, result)
		}()
	}
	return job, nil
}

func (f *fakeSystemd) getUnitByPID(pid uint32) (dbus.ObjectPath, *dbus.Error) {
	if int(pid) != os.Getpid() || f.self == "" {
		return "", dbus.NewError("org.freedesktop.systemd1.NoUnitForPID", []any{fmt.Sprintf("PID %d does not belong to any loaded unit.", pid)})
	}
	return unitObject(f.self), nil
}

func (f *fakeSystemd) recorded() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.events...)
}

// logTo returns a run logger writing text lines to buf.
func logTo(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "duration" {
				return slog.Attr{}
			}
			return a
		},
	}))
}

const twoUnits = `restartStrategy: systemd
      restartUnits: [ggl.core.iotcored.service, greengrass-lite.target]`

func TestRestartThroughDBus(t *testing.T) {
	addr := startBus(t)
	sd := startFakeSystemd(t, addr, &fakeSystemd{
		results:     map[string]string{"ggl.core.iotcored.service": "done", "greengrass-lite.target": "done"},
		resultDelay: 200 * time.Millisecond,
	})
	script, log := recordedSystemctl(t, 0, "")
	useBus(t, addr, "")
	d := newDevice(t, replaceLine(t, noRestart, twoUnits+"\n      systemctlPath: "+script))
	var logs bytes.Buffer
	r := d.run(true)
	r.Log = logTo(&logs)
	if err := (&Restart{}).Run(context.Background(), r); err != nil {
		t.Fatalf("Restart: %v\n%s", err, logs.String())
	}
	// In order, each with mode replace, the second only once the first
	// job has ended.
	want := []string{
		"RestartUnit ggl.core.iotcored.service replace",
		"JobRemoved ggl.core.iotcored.service done",
		"RestartUnit greengrass-lite.target replace",
		"JobRemoved greengrass-lite.target done",
	}
	if got := sd.recorded(); !reflect.DeepEqual(got, want) {
		t.Errorf("systemd saw\n%q\nwant\n%q", got, want)
	}
	if calls := recordedCalls(t, log); calls != nil {
		t.Errorf("systemctl ran although the bus was there: %q", calls)
	}
	for _, line := range []string{
		`level=INFO msg="restarting units through D-Bus" units="ggl.core.iotcored.service greengrass-lite.target"`,
		`level=INFO msg="unit restarted" unit=ggl.core.iotcored.service via=D-Bus mode=replace`,
		`level=INFO msg="unit restarted" unit=greengrass-lite.target via=D-Bus mode=replace`,
	} {
		if !strings.Contains(logs.String(), line+"\n") {
			t.Errorf("log lacks %s:\n%s", line, logs.String())
		}
	}
}

// A job that ends other than "done" is an error naming the unit and the
// result, retried by the engine; the units after it are left alone.
func TestRestartThroughDBusJobFails(t *testing.T) {
	for _, tc := range []struct {
		result, want string
	}{
		{"failed", `restart ggl.core.iotcored.service through D-Bus: job result "failed" (the unit did not come back up): see ` + "`journalctl -u ggl.core.iotcored.service`"},
		{"timeout", `restart ggl.core.iotcored.service through D-Bus: job result "timeout" (the unit's stop or start timed out): see ` + "`journalctl -u ggl.core.iotcored.service`"},
		{"canceled", `restart ggl.core.iotcored.service through D-Bus: job result "canceled" (another job replaced it before it finished): see ` + "`journalctl -u ggl.core.iotcored.service`"},
	} {
		t.Run(tc.result, func(t *testing.T) {
			addr := startBus(t)
			sd := startFakeSystemd(t, addr, &fakeSystemd{
				results: map[string]string{"ggl.core.iotcored.service": tc.result, "greengrass-lite.target": "done"},
			})
			useBus(t, addr, "")
			d := newDevice(t, replaceLine(t, noRestart, twoUnits))
			err := (&Restart{}).Run(context.Background(), d.run(true))
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v\nwant %s", err, tc.want)
			}
			if !failure.IsTransient(err) {
				t.Error("a failed job is not retried")
			}
			want := []string{
				"RestartUnit ggl.core.iotcored.service replace",
				"JobRemoved ggl.core.iotcored.service " + tc.result,
			}
			if got := sd.recorded(); !reflect.DeepEqual(got, want) {
				t.Errorf("systemd saw %q, want %q", got, want)
			}
		})
	}
}

// A unit systemd does not know, or a name it refuses, is a config
// mistake, and a caller systemd refuses stays refused: fatal, naming the
// key or what to do.
func TestRestartThroughDBusUnknownUnit(t *testing.T) {
	for _, tc := range []struct{ unit, want string }{
		{"gg-lite.target", `restartUnits: systemd cannot load unit "gg-lite.target" (Unit gg-lite.target not found.): fix restartUnits or install the unit`},
		{"-odd.service", `restartUnits: systemd cannot load unit "-odd.service" (Unit name -odd.service is not valid.): fix restartUnits or install the unit`},
		{"refused.service", `restart refused.service through D-Bus: systemd refused (Interactive authentication required.): run fleetprov as root, or allow it with a polkit rule`},
	} {
		t.Run(tc.unit, func(t *testing.T) {
			addr := startBus(t)
			startFakeSystemd(t, addr, &fakeSystemd{results: map[string]string{"greengrass-lite.target": "done"}})
			useBus(t, addr, "")
			d := newDevice(t, replaceLine(t, noRestart, "restartStrategy: systemd\n      restartUnits: ['"+tc.unit+"']"))
			err := (&Restart{}).Run(context.Background(), d.run(true))
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v\nwant %s", err, tc.want)
			}
			if failure.IsTransient(err) {
				t.Error("an error that no retry can fix is retried")
			}
		})
	}
}

// fleetprov.service runs before greengrass-lite.target: while it is
// still starting, a job for the target waits for it, so waiting for that
// job would wait for ourselves. The restart is queued, not awaited; a
// unit not ordered after us is still awaited.
func TestRestartThroughDBusFromUnitOrderedBefore(t *testing.T) {
	addr := startBus(t)
	sd := startFakeSystemd(t, addr, &fakeSystemd{
		results:   map[string]string{"ggl.core.iotcored.service": "done", "greengrass-lite.target": "done"},
		silent:    map[string]bool{"greengrass-lite.target": true}, // its job ends only after we exit
		self:      "fleetprov.service",
		selfState: "activating",
		after: map[string][]string{
			"greengrass-lite.target":    {"basic.target", "fleetprov.service", "ggl.core.iotcored.service"},
			"ggl.core.iotcored.service": {"basic.target"},
		},
	})
	useBus(t, addr, "")
	d := newDevice(t, replaceLine(t, noRestart, twoUnits))
	var logs bytes.Buffer
	r := d.run(true)
	r.Log = logTo(&logs)
	// A generous bound: only a restart that waits for the target's job
	// takes all of it.
	if err := (&Restart{Timeout: time.Minute}).Run(context.Background(), r); err != nil {
		t.Fatalf("Restart: %v\n%s", err, logs.String())
	}
	want := []string{
		"RestartUnit ggl.core.iotcored.service replace",
		"JobRemoved ggl.core.iotcored.service done",
		"RestartUnit greengrass-lite.target replace",
	}
	if got := sd.recorded(); !reflect.DeepEqual(got, want) {
		t.Errorf("systemd saw %q, want %q", got, want)
	}
	line := `level=INFO msg="unit restart queued" unit=greengrass-lite.target via=D-Bus mode=replace reason="greengrass-lite.target is ordered after fleetprov.service, which is still starting: systemd runs the job once this run ends"`
	if !strings.Contains(logs.String(), line+"\n") {
		t.Errorf("log lacks %s:\n%s", line, logs.String())
	}
}

// Once fleetprov.service has started (a run by hand while it is active,
// or a unit not ordered before the target), the target's job is awaited.
func TestRestartThroughDBusFromActiveUnit(t *testing.T) {
	addr := startBus(t)
	sd := startFakeSystemd(t, addr, &fakeSystemd{
		results:   map[string]string{"greengrass-lite.target": "failed"},
		self:      "fleetprov.service",
		selfState: "active",
		after:     map[string][]string{"greengrass-lite.target": {"fleetprov.service"}},
	})
	useBus(t, addr, "")
	d := newDevice(t, replaceLine(t, noRestart, `restartStrategy: "systemd"`))
	err := (&Restart{}).Run(context.Background(), d.run(true))
	if err == nil || !strings.HasPrefix(err.Error(), `restart greengrass-lite.target through D-Bus: job result "failed"`) {
		t.Fatalf("err = %v, want the failed job's result", err)
	}
	if got, want := sd.recorded(), []string{"RestartUnit greengrass-lite.target replace", "JobRemoved greengrass-lite.target failed"}; !reflect.DeepEqual(got, want) {
		t.Errorf("systemd saw %q, want %q", got, want)
	}
}

// With no system bus, systemctl restarts the units, and the log says so.
func TestRestartFallsBackToSystemctl(t *testing.T) {
	useBus(t, "unix:path="+filepath.Join(t.TempDir(), "no-bus"), "")
	script, log := recordedSystemctl(t, 0, "")
	d := newDevice(t, replaceLine(t, noRestart, twoUnits+"\n      systemctlPath: "+script))
	var logs bytes.Buffer
	r := d.run(true)
	r.Log = logTo(&logs)
	if err := (&Restart{}).Run(context.Background(), r); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	want := [][]string{{script, "restart", "--job-mode=replace", "--", "ggl.core.iotcored.service", "greengrass-lite.target"}}
	if got := recordedCalls(t, log); !reflect.DeepEqual(got, want) {
		t.Errorf("systemctl calls = %q, want %q", got, want)
	}
	for _, line := range []string{
		`level=INFO msg="no system bus; restarting units with systemctl" units="ggl.core.iotcored.service greengrass-lite.target" systemctl=` + script,
		`level=INFO msg="units restarted" units="ggl.core.iotcored.service greengrass-lite.target" via=systemctl`,
	} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("log lacks %s:\n%s", line, logs.String())
		}
	}
}

// Without a bus there is no asking what a unit is ordered after: inside a
// service, systemctl queues the restarts (--no-block) rather than wait,
// possibly for ourselves.
func TestRestartSystemctlInsideAService(t *testing.T) {
	useBus(t, "unix:path="+filepath.Join(t.TempDir(), "no-bus"), "0::/system.slice/fleetprov.service\n")
	script, log := recordedSystemctl(t, 0, "")
	d := newDevice(t, replaceLine(t, noRestart, `restartStrategy: "systemd"`+"\n      systemctlPath: "+script))
	var logs bytes.Buffer
	r := d.run(true)
	r.Log = logTo(&logs)
	if err := (&Restart{}).Run(context.Background(), r); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	want := [][]string{{script, "restart", "--job-mode=replace", "--no-block", "--", "greengrass-lite.target"}}
	if got := recordedCalls(t, log); !reflect.DeepEqual(got, want) {
		t.Errorf("systemctl calls = %q, want %q", got, want)
	}
	line := `level=INFO msg="unit restarts queued" units=greengrass-lite.target via=systemctl`
	if !strings.Contains(logs.String(), line) {
		t.Errorf("log lacks %s:\n%s", line, logs.String())
	}
}

// A job that never ends is given up at the restart's timeout, naming the
// unit, and retried.
func TestRestartThroughDBusJobNeverEnds(t *testing.T) {
	addr := startBus(t)
	startFakeSystemd(t, addr, &fakeSystemd{
		results: map[string]string{"greengrass-lite.target": "done"},
		silent:  map[string]bool{"greengrass-lite.target": true},
	})
	useBus(t, addr, "")
	d := newDevice(t, replaceLine(t, noRestart, `restartStrategy: "systemd"`))
	err := (&Restart{Timeout: time.Second}).Run(context.Background(), d.run(true))
	const prefix, suffix = "restart greengrass-lite.target through D-Bus: no job result after ", "s: see `systemctl list-jobs` and `journalctl -u greengrass-lite.target`"
	if err == nil || !strings.HasPrefix(err.Error(), prefix) || !strings.HasSuffix(err.Error(), suffix) {
		t.Fatalf("err = %v\nwant %s...%s", err, prefix, suffix)
	}
	if !failure.IsTransient(err) {
		t.Error("a job that did not end in time is not retried")
	}
}

// One restart through the bus, connection included: what the D-Bus path
// costs over a job's own time (the stand-in ends each job at once).
func BenchmarkRestartThroughDBus(b *testing.B) {
	addr := startBus(b)
	startFakeSystemd(b, addr, &fakeSystemd{results: map[string]string{"greengrass-lite.target": "done"}})
	useBus(b, addr, "")
	r := &engine.Run{
		Config: &config.Config{RestartStrategy: config.RestartSystemd, RestartUnits: []string{"greengrass-lite.target"}},
		Data:   &engine.Data{},
		Log:    slog.New(slog.DiscardHandler),
		Now:    time.Now,
	}
	for b.Loop() {
		if err := (&Restart{}).Run(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}
