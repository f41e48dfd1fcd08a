package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/keystore/keystoretest"
)

func equalKeys(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// A key fleetprov makes is the one tpm2-tools reads at its handle, and
// carries fleetprov's mark.
func TestCreatedKeyAsTPM2ToolsSeesIt(t *testing.T) {
	sw := startSoftTPM(t)
	ctx := context.Background()
	for _, tc := range []struct {
		alg    keystore.Algorithm
		handle string
	}{{keystore.ECDSAP256, "0x81000010"}, {keystore.RSA2048, "0x81000011"}, {keystore.ECDSAP384, "0x81000012"}, {keystore.RSA3072, "0x81000013"}} {
		uri := "tpm:handle=" + tc.handle + "?device=" + sw.device
		res, err := New().CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: tc.alg})
		if err != nil {
			t.Fatal(err)
		}
		if !equalKeys(res.PublicKey, sw.publicKey(t, tc.handle)) {
			t.Errorf("%s: the key made is not the one tpm2_readpublic reads at %s", tc.alg, tc.handle)
		}
		out := sw.tool(t, "tpm2_readpublic", "-c", tc.handle)
		for _, want := range []string{"fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign", "authorization policy: " + hex.EncodeToString(ownerMark[:])} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: tpm2_readpublic does not show %q:\n%s", tc.alg, want, out)
			}
		}
	}
	if out := sw.tool(t, "tpm2_getcap", "handles-transient"); strings.TrimSpace(out) != "" {
		t.Errorf("objects left loaded in the TPM:\n%s", out)
	}
}

// A key made by hand, as Greengrass lite's guide has vendors do, is used
// through handle: exactly as Greengrass lite names it; fleetprov never
// replaces nor evicts it.
func TestGreengrassHandleKey(t *testing.T) {
	sw := startSoftTPM(t)
	t.Setenv(EnvDevice, sw.device)
	sw.makeKeyByHand(t, "0x81000002")
	want := sw.publicKey(t, "0x81000002")
	ctx := context.Background()
	s := New()
	for _, uri := range []string{"handle:0x81000002", "handle:81000002"} {
		pub, err := s.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: uri})
		if err != nil {
			t.Fatal(err)
		}
		if !equalKeys(pub, want) {
			t.Errorf("%s: not the key tpm2_readpublic reads", uri)
		}
	}
	res, err := s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: "handle:0x81000002", Algorithm: keystore.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	if !equalKeys(res.PublicKey, want) {
		t.Error("CreateKey over a handle: key replaced it")
	}
	signer, err := s.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: "handle:0x81000002"})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("greengrass"))
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(want.(*ecdsa.PublicKey), digest[:], sig) {
		t.Error("the signature does not verify with the key's public key")
	}

	_, err = s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: "tpm:handle=0x81000002", Algorithm: keystore.ECDSAP256})
	wantMsg := "tpm key 0x81000002 in " + sw.device + ": the handle holds a key fleetprov did not create, and fleetprov never evicts such a key: name a free handle in the key URI (tpm2_getcap handles-persistent lists those in use), or use that key with handle:0x81000002"
	if err == nil || err.Error() != wantMsg {
		t.Errorf("CreateKey over another's key:\n got %v\nwant %s", err, wantMsg)
	}
	err = s.DeleteKey(ctx, &keystore.DeleteKeyRequest{URI: "handle:0x81000002"})
	wantMsg = "tpm key 0x81000002 in " + sw.device + ": not evicted: fleetprov did not create it; evict it yourself if it is no longer needed (tpm2_evictcontrol -C o -c 0x81000002)"
	if err == nil || err.Error() != wantMsg {
		t.Errorf("DeleteKey of another's key:\n got %v\nwant %s", err, wantMsg)
	}
	if !equalKeys(sw.publicKey(t, "0x81000002"), want) {
		t.Error("the key made by hand is gone")
	}

	// A free handle: handle: makes a key there, marked as fleetprov's.
	res, err = s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: "handle:0x81000003", Algorithm: keystore.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	if !equalKeys(res.PublicKey, sw.publicKey(t, "0x81000003")) {
		t.Error("handle: on a free handle did not make the key there")
	}
}

// The TLS client signs through the TPM: TLS 1.2 and 1.3, ECDSA and RSA
// (PKCS #1 v1.5 and PSS), against a server that requires the certificate.
func TestTLSClientAuth(t *testing.T) {
	sw := startSoftTPM(t)
	handle := 0x81000020
	keystoretest.TLSClientAuth(t, New(), func(keystore.Algorithm, uint16) string {
		handle++
		return fmt.Sprintf("tpm:handle=0x%08x?device=%s", handle, sw.device)
	})
}

func writeSecret(t *testing.T, name, value string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(value+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// Each problem a user can meet is one line that names the key or device
// and says what to do.
func TestErrors(t *testing.T) {
	sw := startSoftTPM(t)
	ctx := context.Background()
	s := New()

	t.Run("no TPM device", func(t *testing.T) {
		t.Setenv(EnvDevice, "")
		_, err := s.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: "tpm:handle=0x81000002?device=/nonexistent/tpmrm0"})
		want := "no TPM device /nonexistent/tpmrm0: enable the TPM in the firmware and load its driver, or set FLEETPROV_TPM_DEVICE (or device= in the key URI) to where it is"
		if err == nil || err.Error() != want {
			t.Errorf("got  %v\nwant %s", err, want)
		}
		notDevice := filepath.Join(t.TempDir(), "tpm0")
		if err := os.WriteFile(notDevice, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = s.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: "tpm:handle=0x81000002?device=" + notDevice})
		want = "TPM device " + notDevice + " is not a device: set FLEETPROV_TPM_DEVICE (or device= in the key URI) to the TPM's device, /dev/tpmrm0"
		if err == nil || err.Error() != want {
			t.Errorf("got  %v\nwant %s", err, want)
		}
		// The handle: form takes the device from the environment.
		t.Setenv(EnvDevice, "/nonexistent/tpm0")
		_, err = s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: "handle:0x81000002", Algorithm: keystore.ECDSAP256})
		want = "no TPM device /nonexistent/tpm0: enable the TPM in the firmware and load its driver, or set FLEETPROV_TPM_DEVICE (or device= in the key URI) to where it is"
		if err == nil || err.Error() != want {
			t.Errorf("got  %v\nwant %s", err, want)
		}
	})

	t.Run("no software TPM", func(t *testing.T) {
		_, err := s.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: "tpm:handle=0x81000002?device=swtpm:127.0.0.1:1"})
		want := "no TPM at swtpm:127.0.0.1:1: connect: connection refused: start the software TPM (swtpm socket --tpm2 --server type=tcp,port=PORT ...) or set FLEETPROV_TPM_DEVICE to the TPM device"
		if err == nil || err.Error() != want {
			t.Errorf("got  %v\nwant %s", err, want)
		}
	})

	t.Run("a missing key", func(t *testing.T) {
		_, err := s.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: "tpm:handle=0x81000077?device=" + sw.device})
		want := "tpm key 0x81000077 in " + sw.device + ": key not found"
		if !errors.Is(err, keystore.ErrKeyNotFound) || err.Error() != want {
			t.Errorf("got  %v\nwant %s", err, want)
		}
	})

	t.Run("wrong auth", func(t *testing.T) {
		sw.makeKeyByHand(t, "0x81000040", "-p", "right-password")
		right := writeSecret(t, "right", "right-password", 0o600)
		wrong := writeSecret(t, "wrong", "wrong-password", 0o600)
		digest := sha256.Sum256([]byte("auth"))
		uri := "tpm:handle=0x81000040?device=" + sw.device + "&auth-source=file:" + right
		signer, err := s.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: uri})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			t.Fatalf("sign with the right password: %v", err)
		}
		uri = "tpm:handle=0x81000040?device=" + sw.device + "&auth-source=file:" + wrong
		signer, err = s.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: uri})
		if err != nil {
			t.Fatal(err)
		}
		_, err = signer.Sign(rand.Reader, digest[:], crypto.SHA256)
		want := "tpm key 0x81000040 in " + sw.device + ": sign: the TPM refused the password from file:" + wrong + " (wrong auth): give the key's password with auth-source=file:/path in a tpm:handle=0x81000040 key URI"
		if err == nil || err.Error() != want {
			t.Errorf("got  %v\nwant %s", err, want)
		}
		if strings.Contains(fmt.Sprint(err), "wrong-password") {
			t.Error("the message shows the password")
		}
	})

	t.Run("auth-source problems", func(t *testing.T) {
		open := writeSecret(t, "open", "pw", 0o644)
		long := writeSecret(t, "long", strings.Repeat("x", 33), 0o600)
		t.Setenv("FLEETPROV_TEST_LONG_TPM_AUTH", strings.Repeat("y", 33))
		for _, tc := range []struct{ src, want string }{
			{"file:" + long, "auth-source file:" + long + ": the password is longer than 32 bytes, more than a TPM key's authorization value can hold: use a shorter one"},
			{"env:FLEETPROV_TEST_LONG_TPM_AUTH", "auth-source env:FLEETPROV_TEST_LONG_TPM_AUTH: the password is longer than 32 bytes, more than a TPM key's authorization value can hold: use a shorter one"},
			{"file:" + open, "auth-source file:" + open + ": the file is readable by every user (mode 0644): chmod 0600 it"},
			{"file:/nonexistent/pw", "auth-source file:/nonexistent/pw: the file does not exist: write the TPM key's password into it (mode 0600)"},
			{"env:FLEETPROV_TEST_UNSET_TPM_AUTH", "auth-source env:FLEETPROV_TEST_UNSET_TPM_AUTH: the environment variable FLEETPROV_TEST_UNSET_TPM_AUTH is unset or empty: set it to the TPM key's password"},
		} {
			_, err := s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: "tpm:handle=0x81000041?device=" + sw.device + "&auth-source=" + tc.src, Algorithm: keystore.ECDSAP256})
			if err == nil || err.Error() != tc.want {
				t.Errorf("got  %v\nwant %s", err, tc.want)
			}
		}
	})

	t.Run("NV full", func(t *testing.T) {
		n := fillPersistentMemory(t, sw)
		uri := "tpm:handle=0x81000300?device=" + sw.device
		_, err := s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: keystore.ECDSAP256})
		want := "tpm key 0x81000300 in " + sw.device + ": persist the new key: the TPM has no room for another persistent key (NV full): evict one no longer used (tpm2_getcap handles-persistent lists them; tpm2_evictcontrol -C o -c HANDLE evicts one)"
		if err == nil || err.Error() != want {
			t.Errorf("with %d keys persisted:\ngot  %v\nwant %s", n, err, want)
		}
		if out := sw.tool(t, "tpm2_getcap", "handles-transient"); strings.TrimSpace(out) != "" {
			t.Errorf("the failed CreateKey left objects loaded:\n%s", out)
		}
		for h := 0x81000200; h < 0x81000200+n; h++ {
			if err := s.DeleteKey(ctx, &keystore.DeleteKeyRequest{URI: fmt.Sprintf("tpm:handle=0x%08x?device=%s", h, sw.device)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: keystore.ECDSAP256}); err != nil {
			t.Errorf("CreateKey once room was made: %v", err)
		}
	})

	// Last: it changes the owner password for the rest of this TPM's life.
	t.Run("wrong owner auth", func(t *testing.T) {
		sw.tool(t, "tpm2_changeauth", "-c", "o", "owner-secret")
		_, err := s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: "tpm:handle=0x81000050?device=" + sw.device, Algorithm: keystore.ECDSAP256})
		want := "tpm key 0x81000050 in " + sw.device + ": create the storage key: the TPM refused the owner hierarchy's empty password (wrong auth): fleetprov needs the owner password empty to create keys; clear it (tpm2_changeauth -c o -p OLD) or create the key yourself and name it with handle:0x..."
		if err == nil || err.Error() != want {
			t.Errorf("got  %v\nwant %s", err, want)
		}
	})
}

// fillPersistentMemory persists copies of one fleetprov key at
// 0x81000200, 0x81000201, ... until the TPM has no room left, and says how
// many it made.
func fillPersistentMemory(t *testing.T, sw *softTPM) int {
	t.Helper()
	s, err := open("tpm:handle=0x81000200?device=" + sw.device)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	parent, flush, err := s.storageKey()
	if err != nil {
		t.Fatal(err)
	}
	defer flush()
	tmpl, _ := keyTemplate(keystore.ECDSAP256)
	created, err := tpm2.Create{ParentHandle: parent, InPublic: tpm2.New2B(tmpl)}.Execute(s.tpm)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := tpm2.Load{ParentHandle: parent, InPrivate: created.OutPrivate, InPublic: created.OutPublic}.Execute(s.tpm)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: loaded.ObjectHandle}.Execute(s.tpm) //nolint:errcheck
	for i := 0; i < 10000; i++ {
		_, err := tpm2.EvictControl{
			Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			ObjectHandle:     tpm2.NamedHandle{Handle: loaded.ObjectHandle, Name: loaded.Name},
			PersistentHandle: tpm2.TPMHandle(0x81000200 + i),
		}.Execute(s.tpm)
		if errors.Is(err, tpm2.TPMRCNVSpace) {
			return i
		}
		if err != nil {
			t.Fatalf("persist copy %d: %v", i, err)
		}
	}
	t.Fatal("the TPM took 10000 persistent keys without filling up")
	return 0
}

// tpm: alone names fleetprov's key in the TPM: the lowest handle holding
// one, or else the first free handle from 0x81000002.
func TestFirstFreeHandle(t *testing.T) {
	sw := startSoftTPM(t)
	t.Setenv(EnvDevice, sw.device)
	ctx := context.Background()
	s := New()
	sw.makeKeyByHand(t, "0x81000002")
	sw.makeKeyByHand(t, "0x81000003")

	got, err := s.ResolveURI(ctx, "tpm:?auth-source=env:X")
	if want := "tpm:handle=0x81000004?auth-source=env:X"; err != nil || got != want {
		t.Fatalf("ResolveURI on a TPM with no key of fleetprov's: %q, %v; want %q", got, err, want)
	}
	_, err = s.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: "tpm:"})
	if want := "tpm key 0x81000004 (tpm: settles on it) in " + sw.device + ": key not found"; !errors.Is(err, keystore.ErrKeyNotFound) || err.Error() != want {
		t.Errorf("GetPublicKey(tpm:) before any key: %v, want ErrKeyNotFound: %s", err, want)
	}
	res, err := s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: "tpm:", Algorithm: keystore.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	if !equalKeys(res.PublicKey, sw.publicKey(t, "0x81000004")) {
		t.Fatal("CreateKey(tpm:) did not persist the key at the first free handle, 0x81000004")
	}
	// A handle freed below it does not move the key.
	sw.tool(t, "tpm2_evictcontrol", "-C", "o", "-c", "0x81000003")
	if got, err := s.ResolveURI(ctx, "tpm:"); err != nil || got != "tpm:handle=0x81000004" {
		t.Errorf("ResolveURI once fleetprov's key exists: %q, %v; want tpm:handle=0x81000004", got, err)
	}
	pub, err := s.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: "tpm:"})
	if err != nil || !equalKeys(pub, res.PublicKey) {
		t.Errorf("GetPublicKey(tpm:) = %v, want the key made (%v)", pub, err)
	}
	// Made afresh (a forced run), it stays at its handle.
	again, err := s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: "tpm:", Algorithm: keystore.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	if equalKeys(again.PublicKey, res.PublicKey) || !equalKeys(again.PublicKey, sw.publicKey(t, "0x81000004")) {
		t.Error("CreateKey(tpm:) over fleetprov's key did not replace it in place")
	}
	if got, err := s.ResolveURI(ctx, "handle:0x81000002"); err != nil || got != "handle:0x81000002" {
		t.Errorf("ResolveURI of a handle: URI: %q, %v", got, err)
	}
}

// A storage root key persisted at 0x81000001 is the parent of new keys;
// being a restricted decryption key, it is refused as a signer.
func TestPersistentSRK(t *testing.T) {
	sw := startSoftTPM(t)
	t.Setenv(EnvDevice, sw.device)
	ctx := context.Background()
	dir := t.TempDir()
	sw.tool(t, "tpm2_createprimary", "-C", "o", "-G", "ecc256", "-c", filepath.Join(dir, "srk.ctx"))
	sw.tool(t, "tpm2_evictcontrol", "-C", "o", "-c", filepath.Join(dir, "srk.ctx"), "0x81000001")
	sw.tool(t, "tpm2_flushcontext", "-t")

	s := New()
	if _, err := s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: "tpm:handle=0x81000010", Algorithm: keystore.ECDSAP256}); err != nil {
		t.Fatal(err)
	}
	// The key's parent is the persistent SRK: its qualified name is
	// derived from the SRK's, which a key made under a transient
	// primary from another template would not share.
	srkQN := qualifiedName(t, sw, "0x81000001")
	keyOut := sw.tool(t, "tpm2_readpublic", "-c", "0x81000010")
	_, name, err := func() (*tpm2.TPMTPublic, tpm2.TPM2BName, error) {
		ss, err := open("tpm:handle=0x81000010")
		if err != nil {
			return nil, tpm2.TPM2BName{}, err
		}
		defer ss.Close()
		return ss.readPublic(0x81000010)
	}()
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(append(append([]byte{}, srkQN...), name.Buffer...))
	if got := qualifiedName(t, sw, "0x81000010"); !bytes.Equal(got[2:], want[:]) {
		t.Errorf("the key's qualified name is not derived from the SRK at 0x81000001:\n%s", keyOut)
	}

	_, err = s.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: "handle:0x81000001"})
	wantMsg := "tpm key 0x81000001 in " + sw.device + " is not a key that signs what it is given (sign false, restricted true): name an unrestricted signing key"
	if err == nil || err.Error() != wantMsg {
		t.Errorf("got  %v\nwant %s", err, wantMsg)
	}
}

// qualifiedName is what tpm2_readpublic says the object's qualified name
// is, as bytes (hash algorithm first).
func qualifiedName(t *testing.T, sw *softTPM, handle string) []byte {
	t.Helper()
	for _, line := range strings.Split(sw.tool(t, "tpm2_readpublic", "-c", handle), "\n") {
		if v, ok := strings.CutPrefix(line, "qualified name: "); ok {
			b, err := hex.DecodeString(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("tpm2_readpublic shows no qualified name for %s", handle)
	return nil
}

// Too many wrong passwords put the TPM in lockout, and the message says so.
func TestLockout(t *testing.T) {
	sw := startSoftTPM(t)
	ctx := context.Background()
	sw.tool(t, "tpm2_dictionarylockout", "-s", "-n", "1", "-t", "600", "-l", "600")
	sw.makeKeyByHand(t, "0x81000040", "-p", "right-password")
	wrong := writeSecret(t, "wrong", "wrong-password", 0o600)
	uri := "tpm:handle=0x81000040?device=" + sw.device + "&auth-source=file:" + wrong
	signer, err := New().CreateSigner(ctx, &keystore.CreateSignerRequest{URI: uri})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("lockout"))
	var last error
	for i := 0; i < 3; i++ {
		_, last = signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	}
	want := "tpm key 0x81000040 in " + sw.device + ": sign: the TPM is in dictionary-attack lockout after too many wrong passwords: wait for it to recover, or reset it with the lockout password (tpm2_dictionarylockout -c)"
	if last == nil || last.Error() != want {
		t.Errorf("got  %v\nwant %s", last, want)
	}
}

// docs/tpm.md shows the mark fleetprov's keys carry, and every message
// this package's tests check.
func TestDocs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "tpm.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	if !strings.Contains(doc, hex.EncodeToString(ownerMark[:])) {
		t.Error("docs/tpm.md does not show fleetprov's mark")
	}
	for _, msg := range []string{
		"the handle holds a key fleetprov did not create, and fleetprov never evicts such a key",
		"the TPM has no room for another persistent key (NV full)",
		"(wrong auth): give the key's password with auth-source=file:/path",
		"the TPM refused the owner hierarchy's empty password (wrong auth)",
		"the TPM is in dictionary-attack lockout after too many wrong passwords",
		"no TPM device /dev/tpmrm0: enable the TPM in the firmware and load its driver",
		"names a TPM key (handle:), but this fleetprov has no TPM key store",
		"permission denied: run fleetprov as a user of the device's group (tss on Debian)",
		"is not a key that signs what it is given (sign false, restricted true): name an unrestricted signing key",
	} {
		if !strings.Contains(doc, msg) {
			t.Errorf("docs/tpm.md does not show %q", msg)
		}
	}
}

// A TPM device the user may not open is named, with what to do. Only root
// can make the device node this needs, and only another user is refused:
// the test runs the check as nobody.
func TestDevicePermissionDenied(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("skipping: making a device node needs root")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("skipping: setpriv (util-linux) is not installed")
	}
	dir, err := os.MkdirTemp("", "tpm-perm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dev := filepath.Join(dir, "tpmrm0")
	// A character device (the null device's numbers, 1:3, encoded as
	// Linux does for small numbers) only root may open, as /dev/tpmrm0 is
	// to a user outside the tss group.
	if err := syscall.Mknod(dev, syscall.S_IFCHR|0o600, 1<<8|3); err != nil {
		t.Skipf("skipping: cannot make a device node here: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tpm.test")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin)
	cmd.Env = append(os.Environ(), envOpenTPM+"="+dev)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := "TPM device " + dev + ": permission denied: run fleetprov as a user of the device's group (tss on Debian)\n"
	if string(out) != want {
		t.Errorf("got  %q\nwant %q", out, want)
	}
}
