package abilities_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/fleetprov/fleetprov/plugins/internal/abilities"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// Every combination offers exactly the abilities it is told of, though the
// client (a Memory) has all three, and each call reaches the client.
func TestOffersExactlyTheGivenAbilities(t *testing.T) {
	ctx := context.Background()
	for mask := range 8 {
		imp, del, crt := mask&1 != 0, mask&2 != 0, mask&4 != 0
		t.Run(fmt.Sprintf("import=%v,delete=%v,certificate=%v", imp, del, crt), func(t *testing.T) {
			core := keystore.NewMemory()
			ks := abilities.KeyStore(core, imp, del, crt)

			gotImp, hasImp := ks.(keystore.KeyImporter)
			gotDel, hasDel := ks.(keystore.KeyDeleter)
			_, hasCrt := ks.(keystore.CertificateStorer)
			if hasImp != imp || hasDel != del || hasCrt != crt {
				t.Fatalf("offers import=%v, delete=%v, certificate=%v; want %v, %v, %v", hasImp, hasDel, hasCrt, imp, del, crt)
			}
			if _, ok := ks.(keystore.URIChecker); ok {
				t.Error("offers URIChecker, which it was not given")
			}

			if _, err := ks.CreateKey(ctx, &keystore.CreateKeyRequest{URI: "mem:core", Algorithm: keystore.ECDSAP256}); err != nil {
				t.Fatal(err)
			}
			if _, err := core.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: "mem:core"}); err != nil {
				t.Errorf("CreateKey did not reach the client: %v", err)
			}
			if imp {
				key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				if err != nil {
					t.Fatal(err)
				}
				if err := gotImp.ImportKey(ctx, &keystore.ImportKeyRequest{URI: "mem:imported", PrivateKey: key}); err != nil {
					t.Fatal(err)
				}
				if _, err := core.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: "mem:imported"}); err != nil {
					t.Errorf("ImportKey did not reach the client: %v", err)
				}
			}
			if del {
				if _, err := core.CreateKey(ctx, &keystore.CreateKeyRequest{URI: "mem:doomed", Algorithm: keystore.ECDSAP256}); err != nil {
					t.Fatal(err)
				}
				if err := gotDel.DeleteKey(ctx, &keystore.DeleteKeyRequest{URI: "mem:doomed"}); err != nil {
					t.Fatal(err)
				}
				if _, err := core.GetPublicKey(ctx, &keystore.GetPublicKeyRequest{URI: "mem:doomed"}); err == nil {
					t.Error("DeleteKey did not reach the client")
				}
			}
		})
	}
}
