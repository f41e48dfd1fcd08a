package paramsource

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Names of the built-in sources.
const (
	SourceMAC       = "mac"
	SourceMachineID = "machine-id"
	SourceDMI       = "dmi"
	SourceEnv       = "env"
	SourceFile      = "file"
	SourceCommand   = "command"
)

// MAC address formats (option format of the mac source).
const (
	MACColon      = "colon"      // aa:bb:cc:dd:ee:ff
	MACUnderscore = "underscore" // aa_bb_cc_dd_ee_ff
	MACPlain      = "plain"      // aabbccddeeff
)

// Fixed paths the built-ins read, under Host.Root.
const (
	MachineIDPath = "/etc/machine-id"
	DMIDir        = "/sys/class/dmi/id"
)

// DMIFields are the DMI fields the dmi source reads.
var DMIFields = []string{"product_serial", "product_uuid", "board_serial", "chassis_serial"}

func init() {
	Register(SourceMAC, Factory{Options: []string{"interface", "format"}, Open: openMAC})
	Register(SourceMachineID, Factory{Open: openMachineID})
	Register(SourceDMI, Factory{Options: []string{"field"}, Open: openDMI})
	Register(SourceEnv, Factory{Options: []string{"variable"}, Open: openEnv})
	Register(SourceFile, Factory{Options: []string{"path"}, Open: openFile})
	Register(SourceCommand, Factory{Options: []string{"command", "timeout"}, Open: openCommand})
}

// funcSource is a built-in: one parameter, one value.
type funcSource struct {
	param string
	value func(ctx context.Context) (string, error)
}

func (s funcSource) Params(ctx context.Context, _ *ParamsRequest) (*ParamsResponse, error) {
	v, err := s.value(ctx)
	if err != nil {
		return nil, err
	}
	return &ParamsResponse{Params: map[string]string{s.param: v}}, nil
}

// mac: the hardware address of a named interface, or of the first one, in
// the kernel's order, that is up, not loopback and has an address.
func openMAC(req *OpenRequest) (ParamSource, error) {
	name, err := req.Option("interface")
	if err != nil {
		return nil, err
	}
	format, err := req.Option("format")
	if err != nil {
		return nil, err
	}
	if format == "" {
		format = MACColon
	}
	if format != MACColon && format != MACUnderscore && format != MACPlain {
		return nil, fmt.Errorf("format %q is not a MAC format: use %s (aa:bb:..), %s (aa_bb_..) or %s (aabb..)", format, MACColon, MACUnderscore, MACPlain)
	}
	host := req.Host
	return funcSource{param: req.Param, value: func(context.Context) (string, error) {
		addr, err := findMAC(host, strings.TrimSpace(name))
		if err != nil {
			return "", err
		}
		return formatMAC(addr, format), nil
	}}, nil
}

func findMAC(host *Host, name string) (net.HardwareAddr, error) {
	ifs, err := host.interfaces()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	if name != "" {
		for _, i := range ifs {
			if i.Name != name {
				continue
			}
			if !hasMAC(i) {
				return nil, fmt.Errorf("network interface %s has no MAC address: name another interface", name)
			}
			return i.HardwareAddr, nil
		}
		return nil, fmt.Errorf("network interface %q does not exist (have: %s): fix interface", name, strings.Join(names, ", "))
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 && i.Flags&net.FlagUp != 0 && hasMAC(i) {
			return i.HardwareAddr, nil
		}
	}
	return nil, fmt.Errorf("no network interface other than loopback is up and has a MAC address (have: %s): name one with interface", strings.Join(names, ", "))
}

func hasMAC(i net.Interface) bool {
	for _, b := range i.HardwareAddr {
		if b != 0 {
			return true
		}
	}
	return false
}

func formatMAC(a net.HardwareAddr, format string) string {
	s := a.String() // lower-case hex pairs joined by ':'
	switch format {
	case MACUnderscore:
		return strings.ReplaceAll(s, ":", "_")
	case MACPlain:
		return strings.ReplaceAll(s, ":", "")
	}
	return s
}

var machineIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// machine-id: systemd's /etc/machine-id.
func openMachineID(req *OpenRequest) (ParamSource, error) {
	host := req.Host
	return funcSource{param: req.Param, value: func(context.Context) (string, error) {
		path := host.path(MachineIDPath)
		v, err := firstLine(path)
		if err != nil {
			return "", err
		}
		if !machineIDRE.MatchString(v) {
			// systemd writes "uninitialized" there early in first boot.
			return "", fmt.Errorf("%s holds %q, not a machine id (32 hex digits): run after systemd has set it up (systemd-machine-id-setup)", path, v)
		}
		return v, nil
	}}, nil
}

// dmiPlaceholders are what firmware puts in DMI fields nobody filled in:
// sent as a serial number they would give every device the same name.
var dmiPlaceholders = []string{
	"to be filled by o.e.m.", "default string", "not specified", "not applicable",
	"none", "system serial number", "chassis serial number", "o.e.m.", "0", "0123456789",
	"00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
}

// dmi: a field of the firmware's DMI table, by default the product serial.
func openDMI(req *OpenRequest) (ParamSource, error) {
	field, err := req.Option("field")
	if err != nil {
		return nil, err
	}
	if field == "" {
		field = DMIFields[0]
	}
	if !slices.Contains(DMIFields, field) {
		return nil, fmt.Errorf("field %q is not a DMI field fleetprov reads: use %s", field, strings.Join(DMIFields, ", "))
	}
	host := req.Host
	return funcSource{param: req.Param, value: func(context.Context) (string, error) {
		path := host.path(filepath.Join(DMIDir, field))
		v, err := firstLine(path)
		if errors.Is(err, fs.ErrPermission) {
			return "", fmt.Errorf("%s cannot be read (permission denied): run as root, which DMI serials need", path)
		}
		if err != nil {
			return "", err
		}
		if slices.Contains(dmiPlaceholders, strings.ToLower(v)) {
			return "", fmt.Errorf("%s holds the placeholder %q, not a serial: use another source", path, v)
		}
		return v, nil
	}}, nil
}

// env: an environment variable, set and not empty.
func openEnv(req *OpenRequest) (ParamSource, error) {
	name, err := req.Option("variable")
	if err != nil {
		return nil, err
	}
	name = strings.TrimSpace(name)
	if name == "" {
		return nil, errors.New("variable is missing: set it to the environment variable's name")
	}
	if strings.ContainsAny(name, "= \t") {
		return nil, fmt.Errorf("variable %q is not an environment variable's name", name)
	}
	host := req.Host
	return funcSource{param: req.Param, value: func(context.Context) (string, error) {
		v, ok := host.lookupEnv(name)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set: set it in the environment fleetprov runs in", name)
		}
		v = strings.TrimSpace(v)
		if v == "" {
			return "", fmt.Errorf("environment variable %s is empty: give it the value", name)
		}
		return v, nil
	}}, nil
}

// file: the first line of a file, trimmed.
func openFile(req *OpenRequest) (ParamSource, error) {
	path, err := req.Option("path")
	if err != nil {
		return nil, err
	}
	path = strings.TrimSpace(path)
	if path == "" {
		return nil, errors.New("path is missing: set it to the file whose first line is the value")
	}
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("path %q is relative: write the file's absolute path", path)
	}
	return funcSource{param: req.Param, value: func(context.Context) (string, error) {
		return firstLine(filepath.Clean(path))
	}}, nil
}

// maxLine bounds what is read of a file: a value is one short line, and a
// device file (an EEPROM dump) may be large or endless.
const maxLine = 64 << 10

// firstLine reads path's first line, trimmed; an empty one is an error.
func firstLine(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", &wrapped{msg: path + " " + readProblem(err), err: err}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return "", &wrapped{msg: path + " cannot be read (" + errText(err) + ")", err: err}
		}
		return "", fmt.Errorf("%s is empty", path)
	}
	v := strings.TrimSpace(sc.Text())
	if v == "" {
		return "", fmt.Errorf("the first line of %s is empty", path)
	}
	return v, nil
}

func readProblem(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "does not exist"
	case errors.Is(err, fs.ErrPermission):
		return "cannot be read (permission denied)"
	}
	return "cannot be read (" + errText(err) + ")"
}

// errText is an error without the path a *PathError repeats.
func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// wrapped is an error whose message is written for the user and whose
// cause stays reachable for errors.Is.
type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }
