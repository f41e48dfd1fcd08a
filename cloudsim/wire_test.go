package cloudsim

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// The topics the emulator serves are the ones the AWS docs list.
func TestTopicsFromDocs(t *testing.T) {
	b, err := os.ReadFile("testdata/topics.txt")
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]string{OpCreateCertificateFromCsr: "", OpRegisterThing: "GreengrassFleetProvisioningTemplate"}
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
		expand := func(s string) string {
			s = strings.ReplaceAll(s, "{fmt}", "json")
			return strings.ReplaceAll(s, "{templateName}", tmplName)
		}
		reqTopic := expand(f[1])
		req, ok := parseRequestTopic(reqTopic)
		if !ok || req.Op != f[0] || req.Format != "json" || req.Template != tmplName {
			t.Errorf("%s request topic %s parsed as %+v, %v", f[0], reqTopic, req, ok)
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
	if found != 2 {
		t.Fatalf("found %d served operations in topics.txt, want 2", found)
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

func decodeVia(t *testing.T, m map[string]any, v any) {
	t.Helper()
	b, _ := json.Marshal(m)
	if err := (jsonCodec{}).decode(b, v); err != nil {
		t.Fatal(err)
	}
}
