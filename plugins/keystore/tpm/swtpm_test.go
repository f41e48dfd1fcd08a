package tpm

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// softTPM is a software TPM (Debian's swtpm) started for one test, with
// a state directory of its own, reached over its TCP command port.
type softTPM struct {
	port   int
	device string // swtpm:127.0.0.1:PORT, for the key store
	tcti   string // for tpm2-tools
}

// requireTool skips the test when a tool is missing, unless CI asked for
// every tool to be there.
func requireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s is not installed: apt-get install %s", name, pkg)
	if os.Getenv("FLEETPROV_REQUIRE_TOOLS") == "1" {
		t.Fatal(msg + " (FLEETPROV_REQUIRE_TOOLS=1)")
	}
	t.Skip("skipping: " + msg)
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startSoftTPM starts swtpm with a fresh state and waits until its command
// port answers. It is stopped when the test ends.
func startSoftTPM(t testing.TB) *softTPM {
	t.Helper()
	bin := requireTool(t, "swtpm", "swtpm swtpm-tools")
	requireTool(t, "tpm2_readpublic", "tpm2-tools")
	for attempt := 1; ; attempt++ {
		dir := t.TempDir()
		// tpm2-tools' swtpm TCTI finds the control port next to the
		// command port.
		port := freePort(t)
		ctrl := port + 1
		cmd := exec.Command(bin, "socket", "--tpm2",
			"--server", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(port),
			"--ctrl", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(ctrl),
			"--tpmstate", "dir="+dir,
			"--flags", "not-need-init,startup-clear")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		up := false
		deadline := time.Now().Add(60 * time.Second)
		for !up && time.Now().Before(deadline) {
			select {
			case err := <-exited:
				// Most likely a port taken between freePort and now.
				if attempt < 5 {
					t.Logf("swtpm exited (%v), trying other ports: %s", err, out.String())
					goto again
				}
				t.Fatalf("swtpm exited: %v\n%s", err, out.String())
			default:
			}
			if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
				c.Close()
				up = true
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !up {
			_ = cmd.Process.Kill()
			t.Fatalf("swtpm did not open port %d within 60s:\n%s", port, out.String())
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		return &softTPM{
			port:   port,
			device: "swtpm:127.0.0.1:" + strconv.Itoa(port),
			tcti:   "swtpm:host=127.0.0.1,port=" + strconv.Itoa(port),
		}
	again:
	}
}

// tool runs a tpm2-tools command against the software TPM and returns its
// standard output; it fails the test if the command fails.
func (s *softTPM) tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := s.toolErr(name, args...)
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return out
}

func (s *softTPM) toolErr(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+s.tcti)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// makeKeyByHand makes a key the way Greengrass lite's TPM guide has a
// vendor do it, with tpm2-tools, and persists it at handle.
func (s *softTPM) makeKeyByHand(t testing.TB, handle string, extra ...string) {
	t.Helper()
	dir := t.TempDir()
	f := func(name string) string { return filepath.Join(dir, name) }
	// A software TPM has no resource manager: each tool leaves the objects
	// it loaded, and three fill it, so each step is followed by a flush.
	s.tool(t, "tpm2_createprimary", "-C", "o", "-c", f("primary.ctx"))
	s.tool(t, "tpm2_flushcontext", "-t")
	s.tool(t, "tpm2_create", append([]string{"-C", f("primary.ctx"), "-g", "sha256", "-G", "ecc256", "-r", f("device.priv"), "-u", f("device.pub")}, extra...)...)
	s.tool(t, "tpm2_flushcontext", "-t")
	s.tool(t, "tpm2_load", "-C", f("primary.ctx"), "-r", f("device.priv"), "-u", f("device.pub"), "-c", f("device.ctx"))
	s.tool(t, "tpm2_evictcontrol", "-C", "o", "-c", f("device.ctx"), handle)
	s.tool(t, "tpm2_flushcontext", "-t")
}

// publicKey is what tpm2_readpublic says the key at handle is.
func (s *softTPM) publicKey(t testing.TB, handle string) crypto.PublicKey {
	t.Helper()
	out := filepath.Join(t.TempDir(), "pub.pem")
	s.tool(t, "tpm2_readpublic", "-c", handle, "-f", "pem", "-o", out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("tpm2_readpublic wrote no PEM: %q", b)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
