package cloudsim

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

const testCertID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func loadTemplate(t *testing.T, file, name string) *Template {
	t.Helper()
	body, err := os.ReadFile("testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := ParseTemplate(name, body)
	if err != nil {
		t.Fatalf("ParseTemplate(%s): %v", file, err)
	}
	return tmpl
}

func evaluate(t *testing.T, tmpl *Template, params map[string]string) (*Evaluation, error) {
	t.Helper()
	p := map[string]string{ParamCertificateID: testCertID}
	for k, v := range params {
		p[k] = v
	}
	return tmpl.Evaluate(p, map[string]string{"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"})
}

// The templates AWS and its SDKs publish evaluate to the thing their docs
// describe.
func TestReferenceTemplates(t *testing.T) {
	tests := []struct {
		file   string
		params map[string]string
		want   Evaluation
	}{
		{
			file:   "greengrass-lite-cfn-template-body.json",
			params: map[string]string{"SerialNumber": "a2_b9_d2_5a_fd_f9"},
			want: Evaluation{
				Thing: &ThingSpec{Name: "gg_a2_b9_d2_5a_fd_f9", Attributes: map[string]string{}, Groups: []string{"GreengrassDevices"},
					Overrides: map[string]string{"AttributePayload": "MERGE", "ThingGroups": "DO_NOTHING", "ThingTypeName": "REPLACE"}},
				Certificate: &CertificateSpec{ID: testCertID, Status: "ACTIVE"},
				Policies: []PolicySpec{{Name: "GreengrassV2IoTThingPolicy-GreengrassFleetProvisioning"},
					{Name: "GreengrassV2TokenExchangeRoleAliasPolicy-GreengrassFleetProvisioning"}},
				DeviceConfiguration: map[string]string{},
			},
		},
		{
			file:   "embeddedc-demo-template.json",
			params: map[string]string{"SerialNumber": "1234"},
			want: Evaluation{
				Thing: &ThingSpec{Name: "fp_demo_1234", Attributes: map[string]string{}, ThingTypeName: "fp_demo_things",
					Overrides: map[string]string{"AttributePayload": "MERGE", "ThingGroups": "DO_NOTHING", "ThingTypeName": "REPLACE"}},
				Certificate:         &CertificateSpec{ID: testCertID, Status: "ACTIVE"}, // "Active" in the file
				Policies:            []PolicySpec{{Name: "demo_thing_policy"}},
				DeviceConfiguration: map[string]string{},
			},
		},
		{
			file:   "sdk-python-sample-template.json",
			params: map[string]string{"SerialNumber": "42", "DeviceLocation": "Seattle"},
			want: Evaluation{
				Thing: &ThingSpec{Name: "ThingPrefix_42", Attributes: map[string]string{"version": "v1", "serialNumber": "serialNumber"},
					Overrides: map[string]string{"AttributePayload": "MERGE", "ThingGroups": "DO_NOTHING", "ThingTypeName": "REPLACE"}},
				Certificate:         &CertificateSpec{ID: testCertID, Status: "ACTIVE"},
				DeviceConfiguration: map[string]string{"FallbackUrl": "https://www.example.com/test-site", "LocationUrl": "https://example.aws"},
			},
		},
		{
			file:   "docs-template-fleet-provisioning-example.json",
			params: map[string]string{"ThingName": "bulb-7", "SerialNumber": "7", "DeviceLocation": "Seattle"},
			want: Evaluation{
				Thing: &ThingSpec{Name: "bulb-7", Attributes: map[string]string{"version": "v1", "serialNumber": "serialNumber"},
					Groups: []string{"v1-lightbulbs", "WA"}, ThingTypeName: "ThingPrefix_7", BillingGroup: "LightBulbBillingGroup",
					Overrides: map[string]string{"AttributePayload": "MERGE", "ThingGroups": "DO_NOTHING", "ThingTypeName": "REPLACE"}},
				Certificate:         &CertificateSpec{ID: testCertID, Status: "ACTIVE"},
				DeviceConfiguration: map[string]string{"FallbackUrl": "https://www.example.com/test-site", "LocationUrl": "https://example.aws"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := evaluate(t, loadTemplate(t, tt.file, "T"), tt.params)
			if err != nil {
				t.Fatal(err)
			}
			// Inline policy documents are checked apart: their names are hashes.
			var inline []PolicySpec
			var named []PolicySpec
			for _, p := range got.Policies {
				if p.Document != nil {
					inline = append(inline, p)
				} else {
					named = append(named, p)
				}
			}
			got.Policies = named
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got\n%+v %+v\nwant\n%+v %+v", *got.Thing, *got, *tt.want.Thing, tt.want)
			}
			for _, p := range inline {
				if !strings.HasPrefix(p.Name, "T_") || !strings.Contains(string(p.Document), `"Version":"2012-10-17"`) {
					t.Errorf("inline policy %s: %s", p.Name, p.Document)
				}
			}
		})
	}
}

func TestTemplateParameterErrors(t *testing.T) {
	py := loadTemplate(t, "sdk-python-sample-template.json", "Py")
	_, err := evaluate(t, py, map[string]string{"SerialNumber": "1", "DeviceLocation": "Portland"})
	var pe *ParameterError
	if !errors.As(err, &pe) || pe.Msg != `Fn::FindInMap: mapping LocationTable has no key "Portland".` {
		t.Errorf("unknown mapping key: %v", err)
	}
	_, err = evaluate(t, py, nil)
	if !errors.As(err, &pe) || pe.Msg != "Missing value for parameter(s) DeviceLocation, SerialNumber required by template Py." {
		t.Errorf("no parameters: %v", err)
	}
}

func TestTemplateDefaultsAndFunctions(t *testing.T) {
	body := `{
	  "Parameters": {"Serial": {"Type": "String"}, "Prefix": {"Type": "String", "Default": "dev"}, "Tags": {"Type": "String", "Default": "a,b,c"}},
	  "Resources": {
	    "thing": {"Type": "AWS::IoT::Thing", "Properties": {
	      "ThingName": {"Fn::Sub": "${Prefix}-${Serial}"},
	      "ThingGroups": [{"Fn::Select": [1, {"Fn::Split": [",", {"Ref": "Tags"}]}]}],
	      "AttributePayload": {"region": {"Ref": "AWS::Region"}, "literal": {"Fn::Sub": "${!NotAVar}"}}}},
	    "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "inactive"}},
	    "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": "{\"Version\":\"2012-10-17\",\"Statement\":[]}"}}
	  },
	  "DeviceConfiguration": {"id": {"Fn::Join": [":", [{"Ref": "Serial"}, {"Ref": "AWS::IoT::Certificate::Id"}]]}}
	}`
	tmpl, err := ParseTemplate("Fns", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	got, err := evaluate(t, tmpl, map[string]string{"Serial": "9"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Thing.Name != "dev-9" || !reflect.DeepEqual(got.Thing.Groups, []string{"b"}) ||
		got.Thing.Attributes["region"] != "us-east-1" || got.Thing.Attributes["literal"] != "${NotAVar}" {
		t.Errorf("thing %+v", got.Thing)
	}
	if got.Certificate.Status != StatusInactive {
		t.Errorf("Status inactive (lower case) gave %s", got.Certificate.Status)
	}
	if got.DeviceConfiguration["id"] != "9:"+testCertID {
		t.Errorf("DeviceConfiguration %v", got.DeviceConfiguration)
	}
	if len(got.Policies) != 1 || string(got.Policies[0].Document) != `{"Statement":[],"Version":"2012-10-17"}` {
		t.Errorf("policy from an escaped string: %+v", got.Policies)
	}
}

func TestParseTemplateRejects(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"Hook", "", "template Hook: resource thing: Ref to undeclared parameter \"SerialNumber\": declare it under Parameters"},
		{"bad name!", "{}", `template name "bad name!": use 1-36 characters from 0-9 A-Z a-z _ -`},
		{"T", `{"Resources":{"x":{"Type":"AWS::IoT::RoleAlias","Properties":{}}}}`, `template T: resource x has Type "AWS::IoT::RoleAlias"; use AWS::IoT::Thing, AWS::IoT::Certificate or AWS::IoT::Policy`},
		{"T", `{"Resources":{"p":{"Type":"AWS::IoT::Policy","Properties":{}}}}`, "template T: policy p must have exactly one of PolicyName and PolicyDocument"},
		{"T", `{"Resources":{"t":{"Type":"AWS::IoT::Thing","Properties":{"ThingName":{"Fn::If":["a","b","c"]}}}}}`, "template T: resource t: intrinsic function Fn::If is not supported in provisioning templates"},
		{"T", `{"Resources":{"t":{"Type":"AWS::IoT::Thing","Properties":{"ThingName":"x"},"OverrideSettings":{"ThingGroups":"KEEP"}}}}`, "template T: resource t: OverrideSettings ThingGroups is KEEP; use DO_NOTHING, REPLACE, FAIL or MERGE"},
		{"T", `{"x":"` + strings.Repeat("a", 10240) + `"}`, "template T: body is 10248 characters, more than AWS IoT's limit of 10240"},
	}
	for _, tt := range tests {
		body := []byte(tt.body)
		if tt.name == "Hook" {
			// The docs' hook example Refs SerialNumber without declaring it:
			// AWS refuses that template, and so does the emulator.
			body, _ = os.ReadFile("testdata/docs-template-with-hook-example.json")
		}
		_, err := ParseTemplate(tt.name, body)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ParseTemplate(%s): %v\nwant %s", tt.name, err, tt.want)
		}
	}
}

func TestParseFault(t *testing.T) {
	good := map[string]Fault{
		"RegisterThing:delay=2s": {Op: OpRegisterThing, Action: FaultDelay, Delay: 2 * time.Second},
		"CreateCertificateFromCsr:reject=503/ServiceUnavailable:times=2": {Op: OpCreateCertificateFromCsr, Action: FaultReject, Status: 503, Code: "ServiceUnavailable", Times: 2},
		"RegisterThing:drop":              {Op: OpRegisterThing, Action: FaultDrop},
		"RegisterThing:drop=answer":       {Op: OpRegisterThing, Action: FaultDrop, AfterEffect: true},
		"*:disconnect:times=1":            {Op: "*", Action: FaultDisconnect, Times: 1},
		"RegisterThing:disconnect=answer": {Op: OpRegisterThing, Action: FaultDisconnect, AfterEffect: true},
	}
	for spec, want := range good {
		got, err := ParseFault(spec)
		if err != nil || got != want {
			t.Errorf("ParseFault(%q) = %+v, %v; want %+v", spec, got, err, want)
		}
		if got.String() != spec {
			t.Errorf("Fault.String() = %q, want %q", got.String(), spec)
		}
	}
	bad := map[string]string{
		"RegisterThing":               "want OP:ACTION[:times=N]",
		"Connect:drop":                `unknown operation "Connect"; use CreateCertificateFromCsr, RegisterThing or *`,
		"RegisterThing:delay=soon":    "delay needs a positive duration, e.g. delay=2s",
		"RegisterThing:reject=200/OK": "reject needs STATUS/CODE with a 4xx or 5xx status, e.g. reject=503/ServiceUnavailable",
		"RegisterThing:reject=503":    "reject needs STATUS/CODE with a 4xx or 5xx status, e.g. reject=503/ServiceUnavailable",
		"RegisterThing:drop:times=0":  "times needs a positive count, e.g. times=2",
		"RegisterThing:explode":       `unknown action "explode"`,
		"RegisterThing:drop=request":  "drop takes no value or =answer",
	}
	for spec, why := range bad {
		_, err := ParseFault(spec)
		want := `fault "` + spec + `": ` + why + " (syntax: OP:delay=2s|reject=503/ServiceUnavailable|drop[=answer]|disconnect[=answer][:times=N])"
		if err == nil || err.Error() != want {
			t.Errorf("ParseFault(%q) error %v\nwant %s", spec, err, want)
		}
	}
}

func TestFaultTimes(t *testing.T) {
	fs := newFaultSet([]Fault{{Op: OpRegisterThing, Action: FaultDrop, Times: 2}})
	for i := range 3 {
		_, ok := fs.next(OpRegisterThing)
		if ok != (i < 2) {
			t.Errorf("call %d fired %v", i+1, ok)
		}
	}
	if _, ok := fs.next(OpCreateCertificateFromCsr); ok {
		t.Errorf("a RegisterThing fault fired for CreateCertificateFromCsr")
	}
}
