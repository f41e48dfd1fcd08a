package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/fleetprov/fleetprov/failure"
)

// pathRole is one path a run reads or writes, for the checks that keep
// fleetprov's writes off the files it reads and off files that are not
// its own.
type pathRole struct {
	key   string // koanf path of the key that sets it; "" for the config file
	label string // how a message names it: the key, or how it is derived from one
	what  string // what the file holds, for the consequence in a message
	path  string
	// output: fleetprov writes (or moves aside) the file. dir: an input
	// directory whose content fleetprov runs or reads.
	output, dir bool
}

// pathRoles lists the files a run reads (first) and writes, in the order
// a clash is looked for and reported.
func (c *Config) pathRoles() []pathRole {
	const fp = ProvisionPrefix
	var out []pathRole
	add := func(r pathRole) {
		if r.path != "" {
			out = append(out, r)
		}
	}
	add(pathRole{key: fp + "claimCertPath", label: "claimCertPath", what: "the claim certificate", path: c.ClaimCertPath})
	if !IsKeyURI(c.ClaimKeyPath) && !strings.HasPrefix(c.ClaimKeyPath, "handle:") {
		add(pathRole{key: fp + "claimKeyPath", label: "claimKeyPath", what: "the claim key", path: c.ClaimKeyPath})
	}
	add(pathRole{key: fp + "rootCaPath", label: "rootCaPath", what: "the root CA", path: c.RootCAPath})
	add(pathRole{key: fp + "stateScriptsDir", label: "stateScriptsDir", what: "the state scripts", path: c.StateScriptsDir, dir: true})
	add(pathRole{key: fp + "pluginDir", label: "pluginDir", what: "the plugins", path: c.PluginDir, dir: true})

	add(pathRole{label: "the config file", what: "the config file", path: c.File, output: true})
	add(pathRole{key: fp + "certPath", label: "certPath", what: "the device certificate", path: c.CertPath, output: true})
	add(pathRole{key: fp + "keyPath", label: "keyPath", what: "the device key", path: c.KeyPath, output: true})
	add(pathRole{key: fp + "csrPath", label: "csrPath", what: "the CSR", path: c.CSRPath, output: true})
	add(pathRole{key: fp + "outputDir", label: "the root CA copy in outputDir", what: "the root CA copy", path: c.RootCAOutPath, output: true})
	if c.CertPath != "" {
		add(pathRole{key: fp + "certPath", label: "deviceConfiguration.json next to certPath", what: "the device configuration",
			path: filepath.Join(filepath.Dir(c.CertPath), "deviceConfiguration.json"), output: true})
	}
	add(pathRole{key: fp + "journalPath", label: "journalPath", what: "the journal", path: c.JournalPath, output: true})
	return out
}

// CheckPaths refuses paths that would make a run write where it must
// not: an output on a file the run reads or on another output, an output
// inside the state scripts or plugin directory, a journal that is not a
// regular file, an output directory that is not a directory or is a
// symbolic link. Paths are compared after resolving the symbolic links of
// their existing parents (and of an input itself, which is read through
// its link; an output's own link is replaced, not written through). Load
// calls it, also with SkipFileChecks: reset and status act on these paths
// too. It changes nothing.
func (c *Config) CheckPaths() error {
	o := c.origin
	prefix := "config " + c.File + ": "
	name := func(r pathRole) string {
		if r.key != "" && o != nil {
			if s, ok := o.sources[r.key]; ok {
				return s + " (" + r.label + ")"
			}
		}
		return r.label
	}
	roles := c.pathRoles()
	resolved := make([]string, len(roles))
	for i, r := range roles {
		resolved[i] = resolvePath(r.path, !r.output)
	}
	for j, b := range roles {
		if !b.output {
			continue
		}
		for i, a := range roles[:j] {
			switch {
			case a.dir && within(resolved[j], resolved[i]):
				return failure.Usage(fmt.Sprintf("%s%s %s is inside %s %s: keep fleetprov's files out of the directory that holds %s; set %s elsewhere",
					prefix, name(b), b.path, name(a), a.path, a.what, b.label))
			case !a.dir && resolved[j] == resolved[i]:
				both := fmt.Sprintf("%s and %s both name %s", name(b), name(a), b.path)
				if a.path != b.path {
					both = fmt.Sprintf("%s %s and %s %s name the same file", name(b), b.path, name(a), a.path)
				}
				return failure.Usage(fmt.Sprintf("%s%s: fleetprov would write %s over %s; give each its own path", prefix, both, b.what, a.what))
			}
		}
	}
	if err := c.checkJournalKind(); err != nil {
		return err
	}
	return c.checkOutputDirs()
}

// checkJournalKind refuses a journal path that is there and is not a
// regular file: the journal is truncated and appended to in place, so a
// link would change its target, and a device such as /dev/zero never
// ends when read.
func (c *Config) checkJournalKind() error {
	fi, err := os.Lstat(c.JournalPath)
	if err != nil {
		return nil // a missing journal is created; another error shows when it is opened
	}
	own := filepath.Join(c.RootPath, "fleetprov", "journal")
	if !fi.Mode().IsRegular() {
		return c.origin.fail(ProvisionPrefix+"journalPath", "%s is %s, not a regular file: set journalPath to a file of fleetprov's own, such as %s",
			c.JournalPath, kindOf(fi), own)
	}
	if !looksLikeJournal(c.JournalPath) {
		// A run would cut off what it cannot read as torn records,
		// emptying someone else's file.
		return c.origin.fail(ProvisionPrefix+"journalPath", "%s is not a fleetprov journal (it does not start with a journal record): set journalPath to a file of fleetprov's own, such as %s",
			c.JournalPath, own)
	}
	return nil
}

// JournalMagic starts every journal record (engine's record format 1 and
// later); the engine's tests hold the two equal.
const JournalMagic = "fp1 "

// looksLikeJournal says whether the file at path can be a journal: empty,
// starting with a record, or holding only the start of a first record or
// zeros (an append cut short by a crash or a power cut), which the engine
// reads as torn. A file it cannot read is left for the journal's own open
// to report.
func looksLikeJournal(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	head := make([]byte, len(JournalMagic))
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	switch {
	case n == 0, strings.HasPrefix(JournalMagic, string(head)):
		return true
	case head[0] == 0:
		return len(bytes.Trim(head, "\x00")) == 0
	}
	return false
}

// checkOutputDirs refuses an output's directory that is there and is not
// a directory (creating it, or the rename into it, would fail after the
// journal is written), and a directory given to posixUser that is a
// symbolic link: the change of owner would land on the link's target, a
// directory the config does not name. An output file that is there must
// be a file (or a link, which the rename replaces): a rename over a
// directory fails, and one over a device replaces the device.
func (c *Config) checkOutputDirs() error {
	const fp = ProvisionPrefix
	type dirRole struct {
		key, val, dir string
		chowned       bool // Persist gives it to posixUser
	}
	dirs := []dirRole{{fp + "outputDir", c.OutputDir, c.OutputDir, true}}
	if c.CertPath != "" {
		dirs = append(dirs, dirRole{fp + "certPath", c.CertPath, filepath.Dir(c.CertPath), true})
	}
	if c.KeyPath != "" {
		dirs = append(dirs, dirRole{fp + "keyPath", c.KeyPath, filepath.Dir(c.KeyPath), true})
	}
	if c.CSRPath != "" {
		dirs = append(dirs, dirRole{fp + "csrPath", c.CSRPath, filepath.Dir(c.CSRPath), false})
	}
	dirs = append(dirs, dirRole{fp + "journalPath", c.JournalPath, filepath.Dir(c.JournalPath), false})
	for _, d := range dirs {
		where := " " + d.val + " is"
		if d.dir != d.val {
			where = fmt.Sprintf(" %s is in %s, which is", d.val, d.dir)
		}
		if d.chowned {
			if fi, err := os.Lstat(d.dir); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				to, _ := os.Readlink(d.dir)
				return c.origin.fail(d.key, "%s a symbolic link (to %s): name the directory itself; fleetprov does not write credentials or change owners through a link",
					where[1:], to)
			}
		}
		// The nearest part of the path that is there must be a directory
		// for the rest to be created in it.
		for p := d.dir; ; p = filepath.Dir(p) {
			fi, err := os.Stat(p)
			if err == nil && !fi.IsDir() && p == d.dir {
				return c.origin.fail(d.key, "%s %s, not a directory: name a directory, or a path where one can be created", where[1:], kindOf(fi))
			}
			if err == nil && !fi.IsDir() {
				return c.origin.fail(d.key, "%s cannot be created: %s is %s, not a directory: name a directory, or a path where one can be created", d.val, p, kindOf(fi))
			}
			missing := errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) // ENOTDIR: a file above it
			if !missing || filepath.Dir(p) == p {
				break
			}
		}
		if d.dir != d.val {
			fi, err := os.Lstat(d.val)
			if err == nil && !fi.Mode().IsRegular() && fi.Mode()&fs.ModeSymlink == 0 {
				return c.origin.fail(d.key, "%s is %s, not a file: name a file of fleetprov's own", d.val, kindOf(fi))
			}
		}
	}
	return nil
}

// kindOf names a file's type the way a user would.
func kindOf(fi fs.FileInfo) string {
	switch m := fi.Mode(); {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "not a regular file"
}

// resolvePath cleans p and resolves the symbolic links of its longest
// existing parent; with followLast, of p itself too when it exists.
func resolvePath(p string, followLast bool) string {
	p = filepath.Clean(p)
	if followLast {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
	}
	dir, rest := filepath.Dir(p), filepath.Base(p)
	for {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return p
		}
		rest = filepath.Join(filepath.Base(dir), rest)
		dir = parent
	}
}

// within reports whether p is dir or inside it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, string(filepath.Separator))+string(filepath.Separator))
}
