package pkcs11

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Scheme is the URI scheme of keys in a PKCS#11 token (RFC 7512).
const Scheme = "pkcs11"

// URI names one private key in a PKCS#11 token, in the RFC 7512 form
//
//	pkcs11:token=fleet;object=device;id=%01;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/fleetprov/pin
//
// The path attributes token (the token's label), object (the key's
// CKA_LABEL), id (its CKA_ID, percent-encoded bytes) and type (only
// "private") are understood; the query attributes module-path (the PKCS#11
// library) and pin-source (where the user PIN is read from). The PIN itself
// is never part of a URI: a URI travels into config.yaml and the journal.
type URI struct {
	Token  string
	Object string
	ID     []byte
	// Type is "private" or empty; a key URI always names a private key.
	Type string

	ModulePath string
	// PINSource is file:/absolute/path (the first line of that file) or
	// env:NAME (an environment variable of the process using the key).
	PINSource string
}

// ParseURI parses and checks a pkcs11: key URI. Its messages quote the URI
// only after making sure it holds no PIN.
func ParseURI(s string) (*URI, error) {
	rest, ok := strings.CutPrefix(s, Scheme+":")
	if !ok {
		return nil, fmt.Errorf("key URI %q is not a pkcs11: URI", s)
	}
	path, query, _ := strings.Cut(rest, "?")
	// The PIN check comes first: every later message quotes the URI.
	for _, a := range strings.Split(query, "&") {
		if name, _, _ := strings.Cut(a, "="); strings.EqualFold(name, "pin-value") {
			return nil, errors.New("pkcs11 key URI holds pin-value: the PIN must not be written in config or the journal; put it in a file only the provisioning user can read and name that file with pin-source=file:/path")
		}
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("pkcs11 key URI %q: %s", s, fmt.Sprintf(format, args...))
	}
	u := &URI{}
	seen := map[string]bool{}
	for _, a := range strings.Split(path, ";") {
		if a == "" {
			continue
		}
		name, raw, ok := strings.Cut(a, "=")
		if !ok {
			return nil, bad("%q is not name=value", a)
		}
		if seen[name] {
			return nil, bad("attribute %s appears twice", name)
		}
		seen[name] = true
		val, err := unescape(raw)
		if err != nil {
			return nil, bad("attribute %s: %v", name, err)
		}
		switch name {
		case "token":
			u.Token = string(val)
		case "object":
			u.Object = string(val)
		case "id":
			u.ID = val
		case "type":
			u.Type = string(val)
			if u.Type != "private" {
				return nil, bad("type=%s: a key URI names a private key: write type=private or leave type out", u.Type)
			}
		default:
			return nil, bad("attribute %s is not supported: name the token with token= and the key with object= and/or id=", name)
		}
	}
	if query != "" {
		for _, a := range strings.Split(query, "&") {
			if a == "" {
				continue
			}
			name, raw, ok := strings.Cut(a, "=")
			if !ok {
				return nil, bad("%q is not name=value", a)
			}
			if seen["?"+name] {
				return nil, bad("attribute %s appears twice", name)
			}
			seen["?"+name] = true
			val, err := unescape(raw)
			if err != nil {
				return nil, bad("attribute %s: %v", name, err)
			}
			switch name {
			case "module-path":
				u.ModulePath = string(val)
			case "pin-source":
				u.PINSource = string(val)
			default:
				return nil, bad("query attribute %s is not supported: use module-path and pin-source", name)
			}
		}
	}
	switch {
	case u.Token == "":
		return nil, bad("no token: add token=<the token's label>")
	case u.Object == "" && len(u.ID) == 0:
		return nil, bad("names no key: add object=<the key's label> (and optionally id=)")
	case u.ModulePath == "":
		return nil, bad("no module-path: add ?module-path=/path/to/the/pkcs11/library.so")
	case !filepath.IsAbs(u.ModulePath):
		return nil, bad("module-path %s is not an absolute path", u.ModulePath)
	case u.PINSource == "":
		return nil, bad("no pin-source: add &pin-source=file:/path/to/pin-file (or env:VARIABLE)")
	}
	if err := checkPINSource(u.PINSource); err != nil {
		return nil, bad("%v", err)
	}
	return u, nil
}

func checkPINSource(src string) error {
	if p, ok := strings.CutPrefix(src, "file:"); ok {
		p = strings.TrimPrefix(p, "//") // file:///path is the same file as file:/path
		if !filepath.IsAbs(p) {
			return fmt.Errorf("pin-source %s does not name an absolute path: write file:/path/to/pin-file", src)
		}
		return nil
	}
	if name, ok := strings.CutPrefix(src, "env:"); ok {
		if name == "" {
			return fmt.Errorf("pin-source env: names no variable: write env:VARIABLE")
		}
		return nil
	}
	return fmt.Errorf("pin-source %s is not supported: use file:/path/to/pin-file or env:VARIABLE", src)
}

// PIN reads the user PIN from the URI's pin-source. The PIN never appears
// in a message.
func (u *URI) PIN() (string, error) {
	if name, ok := strings.CutPrefix(u.PINSource, "env:"); ok {
		v := os.Getenv(name)
		if v == "" {
			return "", fmt.Errorf("pin-source %s: the environment variable %s is unset or empty: set it to the token's user PIN", u.PINSource, name)
		}
		return v, nil
	}
	p := strings.TrimPrefix(strings.TrimPrefix(u.PINSource, "file:"), "//")
	fi, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("pin-source %s: the file does not exist: write the token's user PIN into it (mode 0600)", u.PINSource)
		}
		return "", fmt.Errorf("pin-source %s: %w", u.PINSource, err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return "", fmt.Errorf("pin-source %s: the file is readable by every user (mode %04o): chmod 0600 it", u.PINSource, fi.Mode().Perm())
	}
	b, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return "", fmt.Errorf("pin-source %s cannot be read (permission denied): run as a user that can read it", u.PINSource)
		}
		return "", fmt.Errorf("pin-source %s: %w", u.PINSource, err)
	}
	// The first line is the PIN, as OpenSSL's pkcs11 provider reads it.
	pin, _, _ := strings.Cut(string(b), "\n")
	pin = strings.TrimSuffix(pin, "\r")
	clear(b)
	if pin == "" {
		return "", fmt.Errorf("pin-source %s: the file's first line is empty: write the token's user PIN into it", u.PINSource)
	}
	return pin, nil
}

// String formats u as an RFC 7512 URI: path attributes in the order token,
// object, id, type; then module-path and pin-source.
func (u *URI) String() string {
	var b strings.Builder
	b.WriteString(Scheme + ":")
	sep := ""
	attr := func(name, val string, query bool) {
		b.WriteString(sep + name + "=" + escape([]byte(val), query))
	}
	if u.Token != "" {
		attr("token", u.Token, false)
		sep = ";"
	}
	if u.Object != "" {
		attr("object", u.Object, false)
		sep = ";"
	}
	if len(u.ID) > 0 {
		b.WriteString(sep + "id=")
		for _, c := range u.ID {
			fmt.Fprintf(&b, "%%%02X", c)
		}
		sep = ";"
	}
	if u.Type != "" {
		attr("type", u.Type, false)
	}
	sep = "?"
	if u.ModulePath != "" {
		attr("module-path", u.ModulePath, true)
		sep = "&"
	}
	if u.PINSource != "" {
		attr("pin-source", u.PINSource, true)
	}
	return b.String()
}

// escape percent-encodes what RFC 7512 does not allow literally in a path
// (query) attribute value.
func escape(v []byte, query bool) string {
	var b strings.Builder
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			strings.IndexByte("-._~:@!$'()*+,=", c) >= 0,
			query && (c == '/' || c == '?'):
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func unescape(s string) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			out = append(out, s[i])
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return nil, fmt.Errorf("%q has a %% not followed by two hex digits", s)
		}
		out = append(out, unhex(s[i+1])<<4|unhex(s[i+2]))
		i += 2
	}
	return out, nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
