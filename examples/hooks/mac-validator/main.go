// Command mac-validator is a pre-provisioning hook for the fleetprov cloud
// emulator: the local stand-in for the Lambda that Greengrass nucleus lite's
// fleet provisioning setup uses to check that a device's SerialNumber is a
// MAC address.
//
// It reads the hook input (the Lambda event: claimCertificateId,
// certificateId, certificatePem, templateArn, clientId, parameters) on
// stdin and writes {"allowProvisioning": true|false} on stdout. It allows
// provisioning only when the SerialNumber parameter is a MAC address: 12
// hex digits (either case) in six pairs, separated throughout by one of
// ':', '-', '_' or by nothing (a2:b9:d2:5a:fd:f9, A2-B9-D2-5A-FD-F9,
// a2_b9_d2_5a_fd_f9, a2b9d25afdf9). Mixed separators are refused.
//
// It exits 0 whenever it could decide, allowed or not, so the emulator's
// log shows a clean denial; it exits 1 only when its input is unreadable
// (which the emulator also treats as a denial).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// input is the part of the hook event this hook reads. The types are its
// own, written from the AWS docs, as a Lambda's would be.
type input struct {
	Parameters map[string]string `json:"parameters"`
}

type output struct {
	AllowProvisioning bool `json:"allowProvisioning"`
}

func main() {
	if err := run(os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "mac-validator:", err)
		os.Exit(1)
	}
}

func run(stdin io.Reader, stdout, stderr io.Writer) error {
	var in input
	if err := json.NewDecoder(io.LimitReader(stdin, 1<<20)).Decode(&in); err != nil {
		return fmt.Errorf("read hook input: %w", err)
	}
	serial, ok := in.Parameters["SerialNumber"]
	allow := ok && isMAC(serial)
	if !allow {
		// stderr reaches the emulator's log, not the device.
		fmt.Fprintf(stderr, "mac-validator: SerialNumber %q is not a MAC address; denying\n", serial)
	}
	return json.NewEncoder(stdout).Encode(output{AllowProvisioning: allow})
}

// isMAC reports whether s is six hex pairs, all separated by the same one
// of ':', '-', '_', or not separated at all. A regular expression would
// need a back-reference to say "the same separator throughout", which Go's
// RE2 lacks, so the check is written out.
func isMAC(s string) bool {
	var step int
	switch len(s) {
	case 12:
		step = 2
	case 17:
		step = 3
		switch s[2] {
		case ':', '-', '_':
		default:
			return false
		}
	default:
		return false
	}
	for i := 0; i < len(s); i += step {
		if !isHex(s[i]) || !isHex(s[i+1]) {
			return false
		}
		if step == 3 && i+2 < len(s) && s[i+2] != s[2] {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
