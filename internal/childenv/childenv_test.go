package childenv

import (
	"os/exec"
	"strings"
	"testing"
)

func TestHideSecretsOfKeyURIs(t *testing.T) {
	t.Setenv("FP_TEST_PKCS11_PIN", "1234")
	t.Setenv("FP_TEST_TPM_AUTH", "s3cret")
	t.Setenv("FP_TEST_FILE_PIN", "kept")
	t.Setenv("FP_TEST_OTHER", "kept")
	HideSecretsOf(
		"plugin:pkcs11/pkcs11:token=t;object=o?module-path=/m.so&pin-source=env:FP_TEST_PKCS11_PIN",
		"tpm:handle=0x81000010?auth-source=env:FP_TEST_TPM_AUTH",
		"pkcs11:token=t?pin-source=file:/etc/FP_TEST_FILE_PIN",
		"file:/var/lib/greengrass/credentials/priv_key",
	)
	// What a command started with Environ sees.
	cmd := exec.Command("/usr/bin/env")
	cmd.Env = Environ()
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	env := string(out)
	for _, gone := range []string{"FP_TEST_PKCS11_PIN=", "FP_TEST_TPM_AUTH=", "1234", "s3cret"} {
		if strings.Contains(env, gone) {
			t.Errorf("a started command sees %q", gone)
		}
	}
	for _, kept := range []string{"FP_TEST_FILE_PIN=kept", "FP_TEST_OTHER=kept", "PATH="} {
		if !strings.Contains(env, kept) {
			t.Errorf("a started command lost %q", kept)
		}
	}
}
