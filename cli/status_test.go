package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// Values the cloud or a plugin put in the journal are printed so that
// escape codes and newlines cannot forge status lines, and long ones are
// cut; plain values print as they are.
func TestStatusQuotesHostileValues(t *testing.T) {
	var out bytes.Buffer
	rep := statusReport{
		Config: "/etc/greengrass/config.yaml", Journal: "/var/lib/fleetprov/journal",
		State: "Failed", FailedState: "RegisterThing",
		Error:         "rejected\n\x1b[2Jstate:       Done",
		ThingName:     "evil\nstate:       Done\x1b[0m",
		CertificateID: "\x1b]0;owned\x07",
		DeviceConfig:  map[string]string{"FallbackUrl": "https://example.com/\r\nprovisioned: true", "Plain": "a b"},
		Transitions: []statusTransition{
			{Seq: 1, State: "RegisterThing", Time: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC), Attempt: 1, Error: strings.Repeat("x", 5000)},
		},
	}
	printStatus(&App{Stdout: &out}, rep)
	got := out.String()
	for _, want := range []string{
		"state:       Failed in RegisterThing\n",
		"error:       \"rejected\\n\\x1b[2Jstate:       Done\"\n",
		"thing:       \"evil\\nstate:       Done\\x1b[0m\"\n",
		"certificate: \"\\x1b]0;owned\\a\"\n",
		"device configuration: FallbackUrl=\"https://example.com/\\r\\nprovisioned: true\"\n",
		"device configuration: Plain=a b\n",
		"error: " + strings.Repeat("x", maxShown) + "... (5000 bytes)\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status lacks %q:\n%s", want, got)
		}
	}
	if strings.ContainsAny(got, "\x1b\r\a") {
		t.Errorf("status holds a control character:\n%q", got)
	}
	if n := strings.Count(got, "\n"); n != 10 {
		t.Errorf("status has %d lines, want 10 (no forged ones):\n%s", n, got)
	}
}

func TestShownLeavesPlainValuesAlone(t *testing.T) {
	for _, s := range []string{"gg_a2_b9_d2_5a_fd_f9", "0123abcdef", "file:/var/lib/x.key", `CreateCertificateFromCsr rejected: statusCode=503 errorCode="ServiceUnavailable"`, "Grüße"} {
		if got := shown(s); got != s {
			t.Errorf("shown(%q) = %q, want it unchanged", s, got)
		}
	}
}
