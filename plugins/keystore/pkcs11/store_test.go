//go:build cgo

package pkcs11

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ThalesGroup/crypto11"

	"github.com/fleetprov/fleetprov/cli"
	"github.com/fleetprov/fleetprov/internal/softhsmtest"
	"github.com/fleetprov/fleetprov/plugins/keystore"
	"github.com/fleetprov/fleetprov/plugins/keystore/keystoretest"
)

// softhsmConf is the SoftHSM2 configuration every test token lives in. The
// module reads SOFTHSM2_CONF when it is loaded, so it is set for the whole
// test process; tests here do not run in parallel.
var softhsmConf string

func TestMain(m *testing.M) {
	switch os.Getenv(envBeCLI) {
	case "1":
		Register()
		os.Exit(cli.Build{}.Main(os.Args, os.Stdout, os.Stderr))
	case "plain":
		os.Exit(cli.Build{}.Main(os.Args, os.Stdout, os.Stderr))
	}
	if _, _, err := softhsmtest.Find(); err == nil {
		dir, err := os.MkdirTemp("", "softhsm")
		if err != nil {
			panic(err)
		}
		softhsmConf, err = softhsmtest.Config(dir)
		if err != nil {
			panic(err)
		}
		os.Setenv("SOFTHSM2_CONF", softhsmConf)
		code := m.Run()
		os.RemoveAll(dir)
		removePluginBinary()
		os.Exit(code)
	}
	code := m.Run()
	removePluginBinary()
	os.Exit(code)
}

const testPIN = "246810"

type token struct {
	module, label, pinFile string
}

var tokens atomic.Int32

// newToken initialises a fresh SoftHSM2 token with its PIN in a 0600 file.
func newToken(t *testing.T) *token {
	t.Helper()
	module := softhsmtest.Require(t)
	label := fmt.Sprintf("fleet-%d", tokens.Add(1))
	if err := softhsmtest.InitToken(softhsmConf, label, testPIN); err != nil {
		t.Fatal(err)
	}
	pin, err := softhsmtest.WritePIN(t.TempDir(), "pin", testPIN)
	if err != nil {
		t.Fatal(err)
	}
	return &token{module: module, label: label, pinFile: pin}
}

func (tk *token) uri(object string, id []byte) string {
	return (&URI{Token: tk.label, Object: object, ID: id, Type: "private", ModulePath: tk.module, PINSource: "file:" + tk.pinFile}).String()
}

func TestCreateKeySignCSR(t *testing.T) {
	tk := newToken(t)
	ctx := context.Background()
	for i, alg := range []keystore.Algorithm{keystore.ECDSAP256, keystore.ECDSAP384, keystore.RSA2048} {
		t.Run(string(alg), func(t *testing.T) {
			s := New()
			defer s.Close()
			uri := tk.uri("device-"+string(alg), []byte{0xd0, 0x01, byte(i)})
			res, err := s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: alg})
			if err != nil {
				t.Fatal(err)
			}
			switch k := res.PublicKey.(type) {
			case *ecdsa.PublicKey:
				want := map[keystore.Algorithm]elliptic.Curve{keystore.ECDSAP256: elliptic.P256(), keystore.ECDSAP384: elliptic.P384()}[alg]
				if k.Curve != want {
					t.Errorf("curve %s, want %s", k.Curve.Params().Name, want.Params().Name)
				}
			case *rsa.PublicKey:
				if alg != keystore.RSA2048 || k.N.BitLen() != 2048 {
					t.Errorf("RSA-%d for %s", k.N.BitLen(), alg)
				}
			default:
				t.Fatalf("public key %T", k)
			}
			pub, err := s.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: uri})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(pub, res.PublicKey) {
				t.Error("GetPublicKey differs from the key CreateKey made")
			}

			// The private half stays in the token.
			_, c, err := s.open(uri)
			if err != nil {
				t.Fatal(err)
			}
			priv, err := c.FindPrivateKey(nil, []byte("device-"+string(alg)))
			if err != nil || priv == nil {
				t.Fatalf("private key object: %v", err)
			}
			attrs, err := c.GetAttributes(priv, []crypto11.AttributeType{crypto11.CkaSensitive, crypto11.CkaExtractable, crypto11.CkaToken, crypto11.CkaPrivate})
			if err != nil {
				t.Fatal(err)
			}
			for typ, want := range map[crypto11.AttributeType]byte{crypto11.CkaSensitive: 1, crypto11.CkaExtractable: 0, crypto11.CkaToken: 1, crypto11.CkaPrivate: 1} {
				if v := attrs[typ].Value; len(v) != 1 || v[0] != want {
					t.Errorf("attribute 0x%x = %v, want %d", typ, v, want)
				}
			}

			signer, err := s.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: uri})
			if err != nil {
				t.Fatal(err)
			}
			digest := sha256.Sum256([]byte("provision me"))
			sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			switch k := pub.(type) {
			case *ecdsa.PublicKey:
				if !ecdsa.VerifyASN1(k, digest[:], sig) {
					t.Error("ECDSA signature from the token does not verify")
				}
			case *rsa.PublicKey:
				if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig); err != nil {
					t.Errorf("RSA signature from the token does not verify: %v", err)
				}
			}

			csrPEM, err := keystore.CreateCSR(signer, "aws-greengrass-nucleus-lite")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := pem.Decode(csrPEM)
			csr, err := x509.ParseCertificateRequest(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Errorf("CSR signature: %v", err)
			}
			if !reflect.DeepEqual(csr.PublicKey, pub) || csr.Subject.CommonName != "aws-greengrass-nucleus-lite" {
				t.Errorf("CSR is for another key or subject %s", csr.Subject)
			}
		})
	}
}

// A run killed after the key was made finds it again in a new process: the
// same public key, and CreateKey refuses to replace it.
func TestExistingKeyIsReusedNeverReplaced(t *testing.T) {
	tk := newToken(t)
	ctx := context.Background()
	uri := tk.uri("device", nil)
	s := New()
	res, err := s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: keystore.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = New() // as a resumed run would
	defer s.Close()
	pub, err := s.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: uri})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pub, res.PublicKey) {
		t.Fatal("a new session finds another key")
	}
	_, err = s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: keystore.ECDSAP256})
	if !errors.Is(err, keystore.ErrKeyExists) {
		t.Fatalf("CreateKey over an existing key: %v, want ErrKeyExists", err)
	}
	if want := fmt.Sprintf(`pkcs11 key object="device" in token %q: key already exists`, tk.label); err.Error() != want {
		t.Errorf("message:\n got %s\nwant %s", err, want)
	}
	// An id already in use is refused too, whatever the label.
	_, c, _ := s.open(uri)
	priv, _ := c.FindPrivateKey(nil, []byte("device"))
	idAttr, err := c.GetAttribute(priv, crypto11.CkaId)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: tk.uri("other", idAttr.Value)}); !errors.Is(err, keystore.ErrKeyExists) {
		t.Errorf("CreateKey with a used id: %v, want ErrKeyExists", err)
	}
	pub2, err := s.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: uri})
	if err != nil || !reflect.DeepEqual(pub2, res.PublicKey) {
		t.Errorf("the key changed after refused CreateKey calls: %v", err)
	}
}

// The token's key serves TLS client authentication, so a claim key can
// live in the token too.
func TestTLSClientAuth(t *testing.T) {
	tk := newToken(t)
	s := New()
	defer s.Close()
	keystoretest.TLSClientAuth(t, s, func(alg keystore.Algorithm, version uint16) string {
		return tk.uri(fmt.Sprintf("claim-%s-%x", alg, version), nil)
	})
}

func TestErrors(t *testing.T) {
	tk := newToken(t)
	ctx := context.Background()
	dir := t.TempDir()
	wrongPIN, err := softhsmtest.WritePIN(dir, "wrong", "999999")
	if err != nil {
		t.Fatal(err)
	}
	notModule := filepath.Join(dir, "not-a-module.so")
	if err := os.WriteFile(notModule, []byte("not a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := URI{Token: tk.label, Object: "device", ModulePath: tk.module, PINSource: "file:" + tk.pinFile}
	with := func(f func(u *URI)) string {
		u := base
		f(&u)
		return u.String()
	}
	for _, tc := range []struct {
		name, uri, want string
		is              error
	}{
		{"no module", with(func(u *URI) { u.ModulePath = "/no/such/libpkcs11.so" }),
			"pkcs11 module /no/such/libpkcs11.so does not exist: set module-path to the token's PKCS#11 library (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)", nil},
		{"not a module", with(func(u *URI) { u.ModulePath = notModule }),
			"pkcs11 module " + notModule + " cannot be loaded as a PKCS#11 library: set module-path to the token's PKCS#11 library", nil},
		{"wrong PIN", with(func(u *URI) { u.PINSource = "file:" + wrongPIN }),
			fmt.Sprintf("pkcs11 token %q: the PIN from file:%s is wrong: put the token's user PIN there", tk.label, wrongPIN), nil},
		{"no such token", with(func(u *URI) { u.Token = "nosuchtoken" }),
			"pkcs11 token \"nosuchtoken\" not found in module " + tk.module + ": initialise it (e.g. softhsm2-util --init-token --free --label nosuchtoken) or fix token= in the key URI", nil},
		{"no such object", with(func(u *URI) { u.Object = "absent" }),
			fmt.Sprintf("pkcs11 key object=\"absent\" in token %q: key not found", tk.label), keystore.ErrKeyNotFound},
		{"no such id", with(func(u *URI) { u.ID = []byte{0xab} }),
			fmt.Sprintf("pkcs11 key object=\"device\" id=ab in token %q: key not found", tk.label), keystore.ErrKeyNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New()
			defer s.Close()
			_, err := s.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: tc.uri})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("GetPublicKey:\n got %v\nwant %s", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error does not wrap %v", tc.is)
			}
			if strings.Contains(err.Error(), testPIN) || strings.Contains(err.Error(), "999999") {
				t.Errorf("message shows a PIN: %v", err)
			}
			if _, err2 := s.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: tc.uri}); err2 == nil || err2.Error() != tc.want {
				t.Errorf("CreateSigner:\n got %v\nwant %s", err2, tc.want)
			}
		})
	}
}

func TestRegister(t *testing.T) {
	tk := newToken(t)
	Register()
	Register() // harmless
	uri := tk.uri("via-open", nil)
	ks, err := keystore.Open(uri)
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	if _, err := ks.CreateKey(context.Background(), &keystore.CreateKeyRequest{URI: uri}); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.GetPublicKey(context.Background(), &keystore.GetPublicKeyRequest{URI: uri}); err != nil {
		t.Fatal(err)
	}
}
