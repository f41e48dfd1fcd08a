package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestIsMAC(t *testing.T) {
	tests := map[string]bool{
		"a2_b9_d2_5a_fd_f9": true, // the Greengrass lite sample SerialNumber
		"a2:b9:d2:5a:fd:f9": true,
		"A2-B9-D2-5A-FD-F9": true,
		"a2b9d25afdf9":      true,
		"A2b9D25aFdF9":      true, // hex is case-insensitive
		"00:00:00:00:00:00": true,

		"":                                 false,
		"not-a-mac":                        false,
		"a2:b9-d2:5a:fd:f9":                false, // mixed separators
		"a2_b9_d2_5a_fd-f9":                false, // last separator differs
		"a2.b9.d2.5a.fd.f9":                false, // '.' is not a separator here
		"a2 b9 d2 5a fd f9":                false,
		"g2:b9:d2:5a:fd:f9":                false, // g is not hex
		"a2:b9:d2:5a:fd":                   false, // five pairs
		"a2:b9:d2:5a:fd:f9:":               false, // trailing separator
		":a2:b9:d2:5a:fd:f9":               false,
		"a2b9d25afdf":                      false, // 11 digits
		"a2b9d25afdf9a":                    false, // 13 digits
		"a2::b9:d2:5a:fd:f9":               false,
		"a2b:9d:25:af:df:9x":               false, // right length, separators misplaced
		"a2:b9:d2:5a:fdf9":                 false,
		"a2\x00b9\x00d2\x005a\x00fd\x00f9": false,
		"ａ2:b9:d2:5a:fd:f9":                false, // a full-width letter is not hex
	}
	for s, want := range tests {
		if got := isMAC(s); got != want {
			t.Errorf("isMAC(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestRun(t *testing.T) {
	tests := []struct {
		name, in, want, wantErr string
	}{
		{"allow", `{"clientId":"c","parameters":{"SerialNumber":"a2_b9_d2_5a_fd_f9"}}`, `{"allowProvisioning":true}`, ""},
		{"deny", `{"parameters":{"SerialNumber":"not-a-mac"}}`, `{"allowProvisioning":false}`, ""},
		{"no serial", `{"parameters":{"Other":"a2b9d25afdf9"}}`, `{"allowProvisioning":false}`, ""},
		{"no parameters", `{}`, `{"allowProvisioning":false}`, ""},
		{"not JSON", `hello`, "", "read hook input: invalid character 'h' looking for beginning of value"},
		{"empty", ``, "", "read hook input: EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(strings.NewReader(tt.in), &out, &errOut)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(out.String()); got != tt.want {
				t.Errorf("stdout %s, want %s", got, tt.want)
			}
		})
	}
}
