package keystore

import (
	"testing"
)

// BenchmarkKeyAndCSR is the device's own crypto before its first request:
// a new key of each algorithm fleetprov offers, and the CSR it signs.
func BenchmarkKeyAndCSR(b *testing.B) {
	for _, alg := range []Algorithm{ECDSAP256, ECDSAP384, RSA2048, RSA3072} {
		b.Run(string(alg), func(b *testing.B) {
			for b.Loop() {
				k, err := NewKey(alg)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := CreateCSR(k, "aws-greengrass-nucleus-lite"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
