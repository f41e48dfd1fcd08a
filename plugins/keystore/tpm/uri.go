package tpm

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// The two ways to name a key in a TPM.
const (
	// SchemeHandle is Greengrass nucleus lite's own form, handle:0x81000002:
	// the key at a persistent handle, written exactly as its OpenSSL
	// provider (tpm2-openssl) reads it.
	SchemeHandle = "handle"
	// Scheme is fleetprov's form, tpm:handle=0x81000010, which may also say
	// where the TPM is and where the key's authorization value comes from:
	// tpm:handle=0x81000010?device=/dev/tpmrm0&auth-source=file:/etc/fleetprov/tpm-auth
	Scheme = "tpm"
)

// EnvDevice names the TPM when the key URI does not: a device path
// (/dev/tpmrm0) or swtpm:HOST:PORT for a software TPM's command port.
const EnvDevice = "FLEETPROV_TPM_DEVICE"

// DefaultDevice is the kernel's resource-managed TPM device: several
// programs (fleetprov, Greengrass, tpm2-tools) may use it at once.
const DefaultDevice = "/dev/tpmrm0"

// The persistent handle range (TPM 2.0 Part 2, TPM_HT_PERSISTENT). The
// owner may persist keys in its lower half; the upper half is the
// platform's.
const (
	persistentFirst      = 0x81000000
	persistentOwnerLast  = 0x817FFFFF
	persistentLast       = 0x81FFFFFF
	maxAuthValueInSource = 32 // a SHA-256 key's authValue holds at most a digest
)

// URI names one key in a TPM.
type URI struct {
	// Handle is the persistent handle the key is at, or will be made at.
	// Zero (tpm: without handle=) leaves it to fleetprov: its own key,
	// found by its mark, or a new one at the first free handle.
	Handle uint32
	// Greengrass is true for the handle: form. Such a key is used as it is
	// when it exists, and made there only when the handle is free.
	Greengrass bool
	// Device is where the TPM is; empty means $FLEETPROV_TPM_DEVICE, or
	// /dev/tpmrm0 when that is unset.
	Device string
	// AuthSource is where the key's authorization value (its password)
	// is read: file:/path or env:NAME. Empty means the key has none.
	AuthSource string
}

// ParseURI reads a handle: or tpm: key URI.
func ParseURI(s string) (*URI, error) {
	switch {
	case strings.HasPrefix(s, SchemeHandle+":"):
		return parseHandleURI(s)
	case strings.HasPrefix(s, Scheme+":"):
		return parseTPMURI(s)
	}
	return nil, fmt.Errorf("%q is not a TPM key URI: write handle:0x81000002 or tpm:handle=0x81000002", s)
}

// parseHandleURI reads Greengrass lite's form. Its OpenSSL provider takes
// the digits after "handle:" as hexadecimal, with or without 0x, and
// "?pass" to ask for the key's password at a prompt.
func parseHandleURI(s string) (*URI, error) {
	rest := strings.TrimPrefix(s, SchemeHandle+":")
	digits, query, hasQuery := strings.Cut(rest, "?")
	if hasQuery {
		if query == "pass" {
			return nil, fmt.Errorf("%s: ?pass asks for the key's password at a prompt, which fleetprov cannot show: write tpm:handle=%s?auth-source=file:/path/to/password instead", s, digits)
		}
		return nil, fmt.Errorf("%s: unknown suffix ?%s: write handle:0x81000002 (or tpm:handle=0x81000002?... for fleetprov's options)", s, query)
	}
	h, err := parseHandle(s, digits)
	if err != nil {
		return nil, err
	}
	return &URI{Handle: h, Greengrass: true}, nil
}

func parseHandle(s, digits string) (uint32, error) {
	hex := strings.TrimPrefix(strings.TrimPrefix(digits, "0x"), "0X")
	v, err := strconv.ParseUint(hex, 16, 32)
	if hex == "" || err != nil {
		return 0, fmt.Errorf("%s: handle %q is not a hexadecimal number: write a persistent handle such as 0x81000002", s, digits)
	}
	if v < persistentFirst || v > persistentLast {
		return 0, fmt.Errorf("%s: handle 0x%08x is not a persistent handle (0x81000000 to 0x81ffffff): keys fleetprov uses must be persisted; owner keys go at 0x81000000 to 0x817fffff", s, v)
	}
	return uint32(v), nil
}

func parseTPMURI(s string) (*URI, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("tpm key URI %q: %w", s, err)
	}
	u2 := &URI{}
	seen := map[string]bool{}
	for _, attr := range strings.Split(u.Opaque, ";") {
		if u.Opaque == "" {
			break // tpm: alone: fleetprov's key, wherever it is
		}
		name, val, _ := strings.Cut(attr, "=")
		if seen[name] {
			return nil, fmt.Errorf("tpm key URI %q: %s is given twice: give it once", s, name)
		}
		seen[name] = true
		switch name {
		case "handle":
			if u2.Handle, err = parseHandle(s, val); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("tpm key URI %q: unknown attribute %q: the only one is handle=0x...", s, name)
		}
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("tpm key URI %q: %w", s, err)
	}
	for name, vals := range q {
		if len(vals) > 1 {
			return nil, fmt.Errorf("tpm key URI %q: %s is given twice: give it once", s, name)
		}
		switch name {
		case "device":
			u2.Device = vals[0]
			if err := checkDevice(u2.Device); err != nil {
				return nil, fmt.Errorf("tpm key URI %q: %w", s, err)
			}
		case "auth-source":
			// The value itself is never shown: written in the wrong place,
			// it may be the password.
			v := vals[0]
			if p, ok := strings.CutPrefix(v, "file:"); !(ok && strings.HasPrefix(p, "/")) && !(strings.HasPrefix(v, "env:") && len(v) > 4) {
				return nil, fmt.Errorf("tpm key URI handle=0x%08x: auth-source is neither file:/absolute/path nor env:VARIABLE (not shown: it may be the password itself): put the password in a file only the provisioning user can read and name it with auth-source=file:/path", u2.Handle)
			}
			u2.AuthSource = v
		case "auth-value", "pass", "password":
			return nil, fmt.Errorf("tpm key URI handle=0x%08x holds %s: the password must not be written in config; put it in a file only the provisioning user can read and name it with auth-source=file:/path", u2.Handle, name)
		default:
			return nil, fmt.Errorf("tpm key URI %q: unknown option %q: the options are device and auth-source", s, name)
		}
	}
	return u2, nil
}

// checkDevice checks a device's form: a path, or swtpm:HOST:PORT.
func checkDevice(d string) error {
	if addr, ok := strings.CutPrefix(d, "swtpm:"); ok {
		if i := strings.LastIndex(addr, ":"); i <= 0 || i == len(addr)-1 {
			return fmt.Errorf("TPM device %q: write swtpm:HOST:PORT (the software TPM's command port)", d)
		}
		return nil
	}
	if !strings.HasPrefix(d, "/") {
		return fmt.Errorf("TPM device %q is neither an absolute path nor swtpm:HOST:PORT: write /dev/tpmrm0", d)
	}
	return nil
}

// device is where the key's TPM is.
func (u *URI) device() (string, error) {
	if u.Device != "" {
		return u.Device, nil
	}
	if d := os.Getenv(EnvDevice); d != "" {
		if err := checkDevice(d); err != nil {
			return "", fmt.Errorf("environment variable %s: %w", EnvDevice, err)
		}
		return d, nil
	}
	return DefaultDevice, nil
}

// GreengrassKeyPath is what Greengrass nucleus lite finds the key by: its
// handle: form.
func (u *URI) GreengrassKeyPath() string { return fmt.Sprintf("handle:0x%08x", u.Handle) }

// authValue reads the key's authorization value from AuthSource.
func (u *URI) authValue() ([]byte, error) {
	src := u.AuthSource
	if src == "" {
		return nil, nil
	}
	if name, ok := strings.CutPrefix(src, "env:"); ok {
		v := os.Getenv(name)
		if v == "" {
			return nil, fmt.Errorf("auth-source %s: the environment variable %s is unset or empty: set it to the TPM key's password", src, name)
		}
		return checkAuthLen(src, v)
	}
	path := strings.TrimPrefix(src, "file:")
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("auth-source %s: the file does not exist: write the TPM key's password into it (mode 0600)", src)
		}
		return nil, fmt.Errorf("auth-source %s: %w", src, err)
	}
	if fi.Mode().Perm()&0o004 != 0 {
		return nil, fmt.Errorf("auth-source %s: the file is readable by every user (mode %04o): chmod 0600 it", src, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth-source %s: %w", src, err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return checkAuthLen(src, strings.TrimSuffix(line, "\r"))
}

func checkAuthLen(src, v string) ([]byte, error) {
	if len(v) > maxAuthValueInSource {
		return nil, fmt.Errorf("auth-source %s: the password is longer than %d bytes, more than a TPM key's authorization value can hold: use a shorter one", src, maxAuthValueInSource)
	}
	return []byte(v), nil
}
