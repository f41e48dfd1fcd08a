package cloudsim

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// The topics the emulator serves are the ones the AWS docs list, for every
// operation and both payload formats.
func TestTopicsFromDocs(t *testing.T) {
	b, err := os.ReadFile("testdata/topics.txt")
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]string{OpCreateCertificateFromCsr: "", OpCreateKeysAndCertificate: "", OpRegisterThing: "GreengrassFleetProvisioningTemplate"}
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || strings.HasPrefix(line, "#") {
			continue
		}
		tmplName, ok := served[f[0]]
		if !ok {
			continue
		}
		found++
		for _, format := range []string{"json", "cbor"} {
			expand := func(s string) string {
				s = strings.ReplaceAll(s, "{fmt}", format)
				return strings.ReplaceAll(s, "{templateName}", tmplName)
			}
			reqTopic := expand(f[1])
			req, ok := parseRequestTopic(reqTopic)
			if !ok || req.Op != f[0] || req.Format != format || req.Template != tmplName {
				t.Errorf("%s request topic %s parsed as %+v, %v", f[0], reqTopic, req, ok)
			}
			if !isProvisioningTopic(reqTopic, false) {
				t.Errorf("%s request topic %s is not open to the claim", f[0], reqTopic)
			}
			for _, resp := range f[2:] {
				topic := expand(resp)
				if rest, ok := strings.CutPrefix(topic, "..."); ok { // the docs abbreviate
					topic = reqTopic[:strings.LastIndex(reqTopic, "/provision/")] + rest
				}
				if !isProvisioningTopic(topic, false) || !isProvisioningTopic(topic, true) {
					t.Errorf("%s response topic %s not served", f[0], topic)
				}
				if topic != reqTopic+"/accepted" && topic != reqTopic+"/rejected" {
					t.Errorf("%s response topic %s is not where the emulator answers", f[0], topic)
				}
			}
		}
	}
	if found != 3 {
		t.Fatalf("found %d served operations in topics.txt, want 3", found)
	}
}

// A request carrying exactly the documented keys fills every field the
// emulator reads.
func TestRequestShapesFromDocs(t *testing.T) {
	csr := map[string]any{}
	for _, k := range shapeKeys(t, "docs-payload-CreateCertificateFromCsr.request.jsonish") {
		csr[k] = "v"
	}
	var r1 createFromCsrRequest
	decodeVia(t, csr, &r1)
	if r1.CSR != "v" {
		t.Errorf("documented CreateCertificateFromCsr keys %v leave the CSR empty", keysOf(csr))
	}
	reg := map[string]any{}
	for _, k := range shapeKeys(t, "docs-payload-RegisterThing.request.jsonish") {
		reg[k] = "v"
	}
	reg["parameters"] = map[string]string{"k": "v"}
	var r2 registerThingRequest
	decodeVia(t, reg, &r2)
	if r2.Token != "v" || r2.Parameters["k"] != "v" {
		t.Errorf("documented RegisterThing keys %v not all read: %+v", keysOf(reg), r2)
	}
}

// decodeVia decodes m through the CBOR codec, then through the JSON codec
// into the same v: the documented keys must fill v in both formats (the
// CBOR pass is checked by running first on a zero v).
func decodeVia(t *testing.T, m map[string]any, v any) {
	t.Helper()
	cb, _ := cbor.Marshal(m)
	if err := (cborCodec{}).decode(cb, v); err != nil {
		t.Fatalf("CBOR: %v", err)
	}
	cborResult := fmt.Sprintf("%+v", v)
	b, _ := json.Marshal(m)
	if err := (jsonCodec{}).decode(b, v); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%+v", v); got != cborResult {
		t.Errorf("the same keys decode differently: CBOR %s, JSON %s", cborResult, got)
	}
}
