package keystoretest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// TLSClientAuth proves a store's keys serve mutual TLS, so that a claim
// key can live in it: for ECDSA P-256 and RSA-2048 (PKCS #1 v1.5 under
// TLS 1.2, PSS under 1.3), a key made in s signs the client's side of a
// handshake with a server that requires the certificate. uri names the
// key of each case.
func TLSClientAuth(t *testing.T, s keystore.KeyStore, uri func(alg keystore.Algorithm, version uint16) string) {
	ctx := context.Background()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	serverCert := issue(t, ca, caKey, caKey.Public(), "127.0.0.1", x509.ExtKeyUsageServerAuth)
	serverTLS := tls.Certificate{Certificate: [][]byte{serverCert.Raw}, PrivateKey: caKey}

	for _, alg := range []keystore.Algorithm{keystore.ECDSAP256, keystore.RSA2048} {
		for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			t.Run(fmt.Sprintf("%s/%x", alg, version), func(t *testing.T) {
				uri := uri(alg, version)
				res, err := s.CreateKey(ctx, &keystore.CreateKeyRequest{URI: uri, Algorithm: alg})
				if err != nil {
					t.Fatal(err)
				}
				signer, err := s.CreateSigner(ctx, &keystore.CreateSignerRequest{URI: uri})
				if err != nil {
					t.Fatal(err)
				}
				clientCert := issue(t, ca, caKey, res.PublicKey, "claim", x509.ExtKeyUsageClientAuth)
				ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
					Certificates: []tls.Certificate{serverTLS}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
					MinVersion: version, MaxVersion: version,
				})
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				peer := make(chan string, 1)
				go func() {
					c, err := ln.Accept()
					if err != nil {
						peer <- err.Error()
						return
					}
					defer c.Close()
					tc := c.(*tls.Conn)
					if err := tc.Handshake(); err != nil {
						peer <- "server handshake: " + err.Error()
						return
					}
					peer <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
				}()
				// Waits only bound a stuck handshake; a busy machine
				// never comes near them.
				conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 60 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{
					RootCAs: pool, ServerName: "127.0.0.1",
					Certificates: []tls.Certificate{{Certificate: [][]byte{clientCert.Raw}, PrivateKey: signer}},
					MinVersion:   version, MaxVersion: version,
				})
				if err != nil {
					t.Fatalf("client handshake with the store's key: %v", err)
				}
				defer conn.Close()
				select {
				case got := <-peer:
					if got != "claim" {
						t.Errorf("server saw %q, want the client certificate CN claim", got)
					}
				case <-time.After(60 * time.Second):
					t.Fatal("server never finished the handshake")
				}
			})
		}
	}
}

// issue makes a certificate for pub, signed by ca; a CN that is an IP
// address is also its IP SAN.
func issue(t *testing.T, ca *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey, cn string, usage x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	if ip := net.ParseIP(cn); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
