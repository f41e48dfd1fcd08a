package tpm

import (
	"bytes"
	"context"
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

	"github.com/fleetprov/fleetprov/internal/syncbuf"
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

// startSoftTPM starts swtpm with a fresh state and waits until it
// answers. It is stopped when the test ends.
//
// tpm2-tools' swtpm TCTI finds the control port next to the command
// port. The control socket is opened here and handed to swtpm, so no
// other program can take it; the command port is only known free when
// chosen, so swtpm may find it taken (it then exits, and another pair is
// tried).
func startSoftTPM(t testing.TB) *softTPM {
	t.Helper()
	bin := requireTool(t, "swtpm", "swtpm swtpm-tools")
	requireTool(t, "tpm2_readpublic", "tpm2-tools")
	for attempt := 1; ; attempt++ {
		sw, err := trySoftTPM(t, bin)
		if err == nil {
			return sw
		}
		if attempt == 10 {
			t.Fatal(err)
		}
		t.Logf("%v; trying other ports", err)
	}
}

func trySoftTPM(t testing.TB, bin string) (*softTPM, error) {
	var ctrl *net.TCPListener
	port := 0
	for ctrl == nil {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		ctrl, _ = net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port + 1})
	}
	ctrlFile, err := ctrl.File()
	ctrl.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ctrlFile.Close()
	cmd := exec.Command(bin, "socket", "--tpm2",
		"--server", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(port),
		"--ctrl", "type=tcp,fd=3",
		"--tpmstate", "dir="+t.TempDir(),
		"--flags", "not-need-init,startup-clear")
	cmd.ExtraFiles = []*os.File{ctrlFile}
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	sw := &softTPM{
		port:   port,
		device: "swtpm:127.0.0.1:" + strconv.Itoa(port),
		tcti:   "swtpm:host=127.0.0.1,port=" + strconv.Itoa(port),
	}
	// A command answered through the control socket, with swtpm still
	// running afterwards, is this swtpm's answer: one that could not
	// bind the command port would have exited.
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := sw.toolErr("tpm2_getcap", "handles-persistent")
		if err == nil {
			time.Sleep(100 * time.Millisecond)
		}
		select {
		case werr := <-exited:
			return nil, fmt.Errorf("swtpm on port %d exited (%v): %s", port, werr, out.String())
		default:
		}
		if err == nil {
			t.Cleanup(stop)
			return sw, nil
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("swtpm did not answer within 60s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
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
	// Bounded generously: only a stuck TPM takes this long.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
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
