package iotclient

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/internal/cloudtest"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// benchCloud serves a fresh local cloud and returns the claim connection's
// options for it.
func benchCloud(b *testing.B, format string) Options {
	b.Helper()
	dir, srv := cloudtest.Start(b, cloudsim.Options{}, nil)
	return Options{Endpoint: srv.Addr(), ClaimCertPath: filepath.Join(dir, "claim.pem.crt"), ClaimKeyPath: filepath.Join(dir, "claim.pem.key"),
		RootCAPath: filepath.Join(dir, "AmazonRootCA1.pem"), Format: format}
}

// BenchmarkDial is the claim connection: TCP, mutual TLS, MQTT 5 CONNECT.
func BenchmarkDial(b *testing.B) {
	o := benchCloud(b, "json")
	for b.Loop() {
		c, err := Dial(context.Background(), o)
		if err != nil {
			b.Fatal(err)
		}
		_ = c.Close()
	}
}

// BenchmarkRoundTrip is one CreateCertificateFromCsr request and its
// answer over an open connection, in each payload format: encode, publish,
// the cloud's work (a certificate signed and made durable), the answer
// decoded and checked.
func BenchmarkRoundTrip(b *testing.B) {
	key, err := keystore.NewKey(keystore.ECDSAP256)
	if err != nil {
		b.Fatal(err)
	}
	csr, err := keystore.CreateCSR(key, "aws-greengrass-nucleus-lite")
	if err != nil {
		b.Fatal(err)
	}
	for _, format := range []string{"json", "cbor"} {
		b.Run(format, func(b *testing.B) {
			c, err := Dial(context.Background(), benchCloud(b, format))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			for b.Loop() {
				if _, err := c.CreateCertificateFromCsr(context.Background(), string(csr)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
