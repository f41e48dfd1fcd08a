package paramsource

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeHost is a device with the given interfaces and environment, whose
// fixed paths live under a temporary root.
func fakeHost(t *testing.T, ifs []net.Interface, env map[string]string) *Host {
	t.Helper()
	return &Host{
		Root:       t.TempDir(),
		Interfaces: func() ([]net.Interface, error) { return ifs, nil },
		LookupEnv: func(name string) (string, bool) {
			v, ok := env[name]
			return v, ok
		},
	}
}

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	a, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func writeFile(t testing.TB, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// derive parses value as the templateParams value of Serial and derives it.
func derive(t *testing.T, host *Host, value map[string]any) (string, error) {
	t.Helper()
	s, err := ParseSpec("Serial", value)
	if err != nil {
		t.Fatalf("ParseSpec(%v): %v", value, err)
	}
	d, err := Derive(context.Background(), &DeriveRequest{Specs: []Spec{s}, Host: host})
	if err != nil {
		return "", err
	}
	return d.Params["Serial"], nil
}

func TestBuiltinSources(t *testing.T) {
	lo := net.Interface{Index: 1, Name: "lo", Flags: net.FlagUp | net.FlagLoopback, HardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 0}}
	tun := net.Interface{Index: 2, Name: "tun0", Flags: net.FlagUp}
	down := net.Interface{Index: 3, Name: "ifb0", HardwareAddr: mustMAC(t, "5e:c5:2a:dd:23:a3")}
	eth0 := net.Interface{Index: 4, Name: "eth0", Flags: net.FlagUp, HardwareAddr: mustMAC(t, "A2:B9:D2:5A:FD:F9")}
	wlan0 := net.Interface{Index: 5, Name: "wlan0", Flags: net.FlagUp, HardwareAddr: mustMAC(t, "02:00:00:00:00:05")}
	all := []net.Interface{lo, tun, down, eth0, wlan0}
	env := map[string]string{"DEVICE_SERIAL": "  SN-0042 \n", "EMPTY": " "}

	files := t.TempDir()
	serial := writeFile(t, filepath.Join(files, "serial"), "  EE-1234  \nsecond line\n")
	empty := writeFile(t, filepath.Join(files, "empty"), "")
	blankFirst := writeFile(t, filepath.Join(files, "blank-first"), "\nEE-1234\n")
	missing := filepath.Join(files, "missing")

	type tc struct {
		name  string
		ifs   []net.Interface
		root  map[string]string // files under Host.Root
		value map[string]any
		want  string // the value, or the exact error
		fails bool
	}
	cases := []tc{
		{name: "mac first up non-loopback, colon by default", ifs: all, value: map[string]any{"source": "mac"}, want: "a2:b9:d2:5a:fd:f9"},
		{name: "mac named, underscore", ifs: all, value: map[string]any{"source": "mac", "interface": "wlan0", "format": "underscore"}, want: "02_00_00_00_00_05"},
		{name: "mac named down interface, plain", ifs: all, value: map[string]any{"source": "mac", "interface": "ifb0", "format": "plain"}, want: "5ec52add23a3"},
		{name: "mac missing interface", ifs: all, value: map[string]any{"source": "mac", "interface": "eth9"}, fails: true,
			want: `templateParams.Serial (source mac): network interface "eth9" does not exist (have: eth0, ifb0, lo, tun0, wlan0): fix interface`},
		{name: "mac interface without address", ifs: all, value: map[string]any{"source": "mac", "interface": "tun0"}, fails: true,
			want: "templateParams.Serial (source mac): network interface tun0 has no MAC address: name another interface"},
		{name: "mac only loopback", ifs: []net.Interface{lo, tun, down}, value: map[string]any{"source": "mac"}, fails: true,
			want: "templateParams.Serial (source mac): no network interface other than loopback is up and has a MAC address (have: ifb0, lo, tun0): name one with interface"},

		{name: "machine-id", root: map[string]string{"/etc/machine-id": "3d1219c7c4c5404aaa1f6d2a48adfda4\n"}, value: map[string]any{"source": "machine-id"}, want: "3d1219c7c4c5404aaa1f6d2a48adfda4"},
		{name: "machine-id missing", value: map[string]any{"source": "machine-id"}, fails: true,
			want: "templateParams.Serial (source machine-id): ROOT/etc/machine-id does not exist"},
		{name: "machine-id uninitialized", root: map[string]string{"/etc/machine-id": "uninitialized\n"}, value: map[string]any{"source": "machine-id"}, fails: true,
			want: `templateParams.Serial (source machine-id): ROOT/etc/machine-id holds "uninitialized", not a machine id (32 hex digits): run after systemd has set it up (systemd-machine-id-setup)`},

		{name: "dmi product serial", root: map[string]string{"/sys/class/dmi/id/product_serial": "PF3ABCDE\n"}, value: map[string]any{"source": "dmi"}, want: "PF3ABCDE"},
		{name: "dmi board serial", root: map[string]string{"/sys/class/dmi/id/board_serial": " L1HF65E00X9 \n"}, value: map[string]any{"source": "dmi", "field": "board_serial"}, want: "L1HF65E00X9"},
		{name: "dmi missing", value: map[string]any{"source": "dmi"}, fails: true,
			want: "templateParams.Serial (source dmi): ROOT/sys/class/dmi/id/product_serial does not exist"},
		{name: "dmi placeholder", root: map[string]string{"/sys/class/dmi/id/product_serial": "To Be Filled By O.E.M.\n"}, value: map[string]any{"source": "dmi"}, fails: true,
			want: `templateParams.Serial (source dmi): ROOT/sys/class/dmi/id/product_serial holds the placeholder "To Be Filled By O.E.M.", not a serial: use another source`},
		{name: "dmi empty", root: map[string]string{"/sys/class/dmi/id/product_serial": "\n"}, value: map[string]any{"source": "dmi"}, fails: true,
			want: "templateParams.Serial (source dmi): the first line of ROOT/sys/class/dmi/id/product_serial is empty"},

		{name: "env", value: map[string]any{"source": "env", "variable": "DEVICE_SERIAL"}, want: "SN-0042"},
		{name: "env unset", value: map[string]any{"source": "env", "variable": "NOPE"}, fails: true,
			want: "templateParams.Serial (source env): environment variable NOPE is not set: set it in the environment fleetprov runs in"},
		{name: "env empty", value: map[string]any{"source": "env", "variable": "EMPTY"}, fails: true,
			want: "templateParams.Serial (source env): environment variable EMPTY is empty: give it the value"},

		{name: "file first line trimmed", value: map[string]any{"source": "file", "path": serial}, want: "EE-1234"},
		{name: "file missing", value: map[string]any{"source": "file", "path": missing}, fails: true,
			want: "templateParams.Serial (source file): " + missing + " does not exist"},
		{name: "file empty", value: map[string]any{"source": "file", "path": empty}, fails: true,
			want: "templateParams.Serial (source file): " + empty + " is empty"},
		{name: "file blank first line", value: map[string]any{"source": "file", "path": blankFirst}, fails: true,
			want: "templateParams.Serial (source file): the first line of " + blankFirst + " is empty"},
		{name: "file is a directory", value: map[string]any{"source": "file", "path": files}, fails: true,
			want: "templateParams.Serial (source file): " + files + " cannot be read (is a directory)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := fakeHost(t, c.ifs, env)
			for p, content := range c.root {
				writeFile(t, h.Root+p, content)
			}
			got, err := derive(t, h, c.value)
			want := strings.ReplaceAll(c.want, "ROOT", h.Root)
			if c.fails {
				if err == nil || err.Error() != want {
					t.Errorf("got %q, %v\nwant error %s", got, err, want)
				}
				return
			}
			if err != nil || got != want {
				t.Errorf("got %q, %v; want %q", got, err, want)
			}
		})
	}
}

// Root reads past file modes; the message for an unreadable DMI serial
// can only be seen unprivileged.
func TestDMIPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs as root, which reads any file: this test needs an unprivileged user")
	}
	h := fakeHost(t, nil, nil)
	p := writeFile(t, h.Root+"/sys/class/dmi/id/product_serial", "PF3ABCDE\n")
	if err := os.Chmod(p, 0); err != nil {
		t.Fatal(err)
	}
	_, err := derive(t, h, map[string]any{"source": "dmi"})
	want := "templateParams.Serial (source dmi): " + p + " cannot be read (permission denied): run as root, which DMI serials need"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

// The device this test runs on: the mac source must agree with what the
// kernel publishes in sysfs, a different route to the same facts.
func TestRealMAC(t *testing.T) {
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Skipf("no /sys/class/net here: %v", err)
	}
	type sysIf struct {
		name, addr string
		index      int
		up, loop   bool
		hasNonZero bool
	}
	var best *sysIf
	for _, e := range entries {
		name := e.Name()
		read := func(f string) string {
			b, _ := os.ReadFile(filepath.Join("/sys/class/net", name, f))
			return strings.TrimSpace(string(b))
		}
		var idx, flags int
		if _, err := fmt.Sscanf(read("ifindex"), "%d", &idx); err != nil {
			continue
		}
		if _, err := fmt.Sscanf(read("flags"), "0x%x", &flags); err != nil {
			continue
		}
		s := sysIf{name: name, addr: read("address"), index: idx, up: flags&0x1 != 0, loop: flags&0x8 != 0}
		a, err := net.ParseMAC(s.addr)
		s.hasNonZero = err == nil && hasMAC(net.Interface{HardwareAddr: a})
		if s.hasNonZero {
			got, err := derive(t, nil, map[string]any{"source": "mac", "interface": name})
			if err != nil || got != s.addr {
				t.Errorf("mac of %s: got %q, %v; sysfs says %q", name, got, err, s.addr)
			}
		}
		if s.up && !s.loop && s.hasNonZero && (best == nil || s.index < best.index) {
			best = &s
		}
	}
	got, err := derive(t, nil, map[string]any{"source": "mac", "format": "underscore"})
	if best == nil {
		if err == nil {
			t.Errorf("no interface qualifies by sysfs, yet the mac source answered %q", got)
		}
		return
	}
	if want := strings.ReplaceAll(best.addr, ":", "_"); err != nil || got != want {
		t.Errorf("first non-loopback MAC: got %q, %v; sysfs says %s has %s", got, err, best.name, want)
	}
}

func TestRealMachineID(t *testing.T) {
	b, err := os.ReadFile("/etc/machine-id")
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("this system has no /etc/machine-id")
	}
	if err != nil {
		t.Fatal(err)
	}
	got, err := derive(t, nil, map[string]any{"source": "machine-id"})
	if err != nil || got != strings.TrimSpace(string(b)) {
		t.Errorf("got %q, %v; /etc/machine-id holds %q", got, err, b)
	}
}

func TestRealDMI(t *testing.T) {
	b, err := os.ReadFile("/sys/class/dmi/id/product_serial")
	if err != nil {
		t.Skipf("this system's DMI serial cannot be read here (%v): nothing to compare with", err)
	}
	got, err := derive(t, nil, map[string]any{"source": "dmi"})
	if v := strings.TrimSpace(string(b)); err != nil && !slices.Contains(dmiPlaceholders, strings.ToLower(v)) || err == nil && got != v {
		t.Errorf("got %q, %v; sysfs holds %q", got, err, v)
	}
}

func chmod(p string, m os.FileMode) error { return os.Chmod(p, m) }
