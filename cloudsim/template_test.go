package cloudsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// thingTemplate wraps Properties of a thing (and optional sections) into a
// template body, so the table below shows only what differs.
func thingTemplate(params, props string) string {
	return `{"Parameters": {` + params + `}, "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {` + props + `}}}}`
}

// A template AWS would refuse fails at load with a message naming the JSON
// path inside the template; these are the exact messages an operator reads.
func TestParseTemplateRejects(t *testing.T) {
	const name = `"ThingName": "t1"`
	tests := []struct {
		what, name, body, want string
	}{
		{"bad name", "bad name!", "{}", `template name "bad name!": use 1-36 characters from 0-9 A-Z a-z _ -`},
		{"name too long", strings.Repeat("n", 37), "{}", `template name "` + strings.Repeat("n", 37) + `": use 1-36 characters from 0-9 A-Z a-z _ -`},
		{"body too long", "T", `{"x":"` + strings.Repeat("a", 10240) + `"}`, "template T: body is 10248 characters, more than AWS IoT's limit of 10240"},
		{"not JSON", "T", `{"Resources": {`, "template T: not valid template JSON: unexpected end of JSON input"},
		{"not an object", "T", `[]`, "template T: the body must be a JSON object, not a list"},
		{"null", "T", `null`, "template T: the body must be a JSON object, not null"},
		{"unknown section", "T", `{"Conditions": {}, "Resources": {}}`, "template T: Conditions: unknown section; a provisioning template has Parameters, Mappings, Resources and DeviceConfiguration"},
		{"no resources", "T", `{"Parameters": {}}`, "template T: Resources: missing; a template needs at least one resource"},
		{"resources a list", "T", `{"Resources": []}`, "template T: Resources: want an object of one or more resources, got a list"},
		{"resources empty", "T", `{"Resources": {}}`, "template T: Resources: want an object of one or more resources, got an object"},

		{"parameters a list", "T", `{"Parameters": [], "Resources": {}}`, "template T: Parameters: want an object of parameter declarations, got a list"},
		{"parameter type", "T", thingTemplate(`"X": {"Type": "Number"}`, name), `template T: Parameters.X.Type: is "Number"; provisioning template parameters are of Type String`},
		{"parameter no type", "T", thingTemplate(`"X": {}`, name), `template T: Parameters.X.Type: missing; declare {"Type": "String"}`},
		{"parameter default", "T", thingTemplate(`"X": {"Type": "String", "Default": 5}`, name), "template T: Parameters.X.Default: want a string, got the number 5"},
		{"parameter extra", "T", thingTemplate(`"X": {"Type": "String", "AllowedValues": ["a"]}`, name), "template T: Parameters.X.AllowedValues: unknown; a parameter declares Type and optionally Default and Description"},
		{"parameter not object", "T", thingTemplate(`"X": "String"`, name), `template T: Parameters.X: want {"Type": "String"}, got "String"`},

		{"mapping level 1", "T", `{"Mappings": {"M": []}, "Resources": {}}`, "template T: Mappings.M: want an object of top-level keys, got a list"},
		{"mapping level 2", "T", `{"Mappings": {"M": {"k": "v"}}, "Resources": {}}`, `template T: Mappings.M.k: want an object of second-level keys, got "v"`},
		{"mapping value", "T", `{"Mappings": {"M": {"k": {"k2": {"deep": "x"}}}}, "Resources": {}}`, "template T: Mappings.M.k.k2: want a string or a list of strings, got an object"},
		{"mapping list item", "T", `{"Mappings": {"M": {"k": {"k2": ["a", {}]}}}, "Resources": {}}`, "template T: Mappings.M.k.k2[1]: want a string, got an object"},

		{"resource type", "T", `{"Resources": {"x": {"Type": "AWS::IoT::RoleAlias", "Properties": {}}}}`, `template T: Resources.x.Type: is "AWS::IoT::RoleAlias"; use AWS::IoT::Thing, AWS::IoT::Certificate or AWS::IoT::Policy`},
		{"resource no type", "T", `{"Resources": {"x": {"Properties": {}}}}`, `template T: Resources.x.Type: is null; use AWS::IoT::Thing, AWS::IoT::Certificate or AWS::IoT::Policy`},
		{"resource no properties", "T", `{"Resources": {"x": {"Type": "AWS::IoT::Thing"}}}`, "template T: Resources.x.Properties: want an object, got null"},
		{"resource DependsOn", "T", `{"Resources": {"x": {"Type": "AWS::IoT::Thing", "Properties": {}, "DependsOn": "y"}}}`, "template T: Resources.x.DependsOn: not supported in provisioning templates; a resource has Type, Properties and OverrideSettings"},
		{"resource not object", "T", `{"Resources": {"x": 1}}`, "template T: Resources.x: want an object with Type and Properties, got the number 1"},
		{"two things", "T", `{"Resources": {"a": {"Type": "AWS::IoT::Thing", "Properties": {` + name + `}}, "b": {"Type": "AWS::IoT::Thing", "Properties": {` + name + `}}}}`, "template T: Resources: a and b are both AWS::IoT::Thing; a template has at most one"},

		{"thing property typo", "T", thingTemplate("", name+`, "ThingGroup": ["g"]`), "template T: Resources.thing.Properties.ThingGroup: unknown property of AWS::IoT::Thing; use AttributePayload, BillingGroup, ThingGroups, ThingName, ThingTypeName"},
		{"thing no name", "T", thingTemplate("", `"ThingTypeName": "x"`), "template T: Resources.thing.Properties.ThingName: missing; a thing needs a name"},
		{"thing literal name", "T", thingTemplate("", `"ThingName": "bad name"`), `template T: Resources.thing.Properties.ThingName: "bad name" is not a thing name: use 1-128 characters from a-z A-Z 0-9 : _ -`},
		{"thing name too long", "T", thingTemplate("", `"ThingName": "`+strings.Repeat("n", 129)+`"`), `template T: Resources.thing.Properties.ThingName: "` + strings.Repeat("n", 129) + `" is not a thing name: use 1-128 characters from a-z A-Z 0-9 : _ -`},
		{"thing name a list", "T", thingTemplate("", `"ThingName": ["a"]`), "template T: Resources.thing.Properties.ThingName: want a string, got a list"},
		{"attributes a list", "T", thingTemplate("", name+`, "AttributePayload": []`), "template T: Resources.thing.Properties.AttributePayload: want an object of attribute values, got a list"},
		{"attributes a Ref", "T", thingTemplate(`"A": {"Type": "String"}`, name+`, "AttributePayload": {"Ref": "A"}`), "template T: Resources.thing.Properties.AttributePayload: Ref gives a string; want an object of attribute values"},
		{"attribute nested", "T", thingTemplate("", name+`, "AttributePayload": {"a": {"b": "c"}}`), "template T: Resources.thing.Properties.AttributePayload.a: want a string, got an object"},
		{"attribute null", "T", thingTemplate("", name+`, "AttributePayload": {"a": null}`), "template T: Resources.thing.Properties.AttributePayload.a: want a string, got null"},
		{"groups a string", "T", thingTemplate("", name+`, "ThingGroups": "g"`), `template T: Resources.thing.Properties.ThingGroups: want a list, got "g"`},
		{"groups a Ref", "T", thingTemplate(`"G": {"Type": "String"}`, name+`, "ThingGroups": {"Ref": "G"}`), "template T: Resources.thing.Properties.ThingGroups: Ref gives a string; want a list"},

		{"certificate no id", "T", `{"Resources": {"c": {"Type": "AWS::IoT::Certificate", "Properties": {"Status": "ACTIVE"}}}}`, `template T: Resources.c.Properties.CertificateId: missing; fleet provisioning needs {"Ref": "AWS::IoT::Certificate::Id"}`},
		{"certificate id and CSR", "T", `{"Resources": {"c": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": "x", "CertificateSigningRequest": "y"}}}}`, "template T: Resources.c.Properties: has both CertificateId and CertificateSigningRequest; use one"},
		{"certificate status", "T", `{"Resources": {"c": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Enabled"}}}}`, `template T: Resources.c.Properties.Status: "Enabled" is not a certificate status; use ACTIVE or INACTIVE`},
		{"certificate principal type", "T", `{"Resources": {"c": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "ThingPrincipalType": "EXCLUSIVE"}}}}`, `template T: Resources.c.Properties.ThingPrincipalType: is "EXCLUSIVE"; use EXCLUSIVE_THING or NON_EXCLUSIVE_THING`},
		{"certificate unknown property", "T", `{"Resources": {"c": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificatePem": "x"}}}}`, "template T: Resources.c.Properties.CertificatePem: unknown property of AWS::IoT::Certificate; use CertificateId, CertificateSigningRequest, Status, ThingPrincipalType"},

		{"policy neither", "T", `{"Resources": {"p": {"Type": "AWS::IoT::Policy", "Properties": {}}}}`, "template T: Resources.p.Properties: needs exactly one of PolicyName and PolicyDocument"},
		{"policy both", "T", `{"Resources": {"p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "a", "PolicyDocument": {}}}}}`, "template T: Resources.p.Properties: needs exactly one of PolicyName and PolicyDocument"},
		{"policy string not JSON", "T", `{"Resources": {"p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": "{not json"}}}}`, "template T: Resources.p.Properties.PolicyDocument: the string is not a JSON policy document object"},
		{"policy document a number", "T", `{"Resources": {"p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": 7}}}}`, "template T: Resources.p.Properties.PolicyDocument: want a policy document object or a string holding one, got the number 7"},
		{"policy document a list", "T", `{"Resources": {"p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": []}}}}`, "template T: Resources.p.Properties.PolicyDocument: want a policy document object or a string holding one, got a list"},
		{"policy name literal", "T", `{"Resources": {"p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "bad name"}}}}`, `template T: Resources.p.Properties.PolicyName: "bad name" is not a policy name: use 1-128 characters from a-z A-Z 0-9 _ + = , . @ -`},
		{"policy document bad function", "T", `{"Resources": {"p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": {"Statement": [{"Resource": {"Fn::GetAtt": "x.y"}}]}}}}}`, "template T: Resources.p.Properties.PolicyDocument.Statement[0].Resource: Fn::GetAtt is not supported in provisioning templates; use Ref, Fn::Join, Fn::Select, Fn::Split, Fn::FindInMap or Fn::Sub"},

		{"override value", "T", `{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {` + name + `}, "OverrideSettings": {"ThingGroups": "KEEP"}}}}`, `template T: Resources.t.OverrideSettings.ThingGroups: is "KEEP"; use DO_NOTHING, REPLACE, FAIL or MERGE`},
		{"override merge type", "T", `{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {` + name + `}, "OverrideSettings": {"ThingTypeName": "MERGE"}}}}`, "template T: Resources.t.OverrideSettings.ThingTypeName: MERGE applies only to AttributePayload and ThingGroups"},
		{"override merge billing", "T", `{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {` + name + `}, "OverrideSettings": {"BillingGroup": "MERGE"}}}}`, "template T: Resources.t.OverrideSettings.BillingGroup: MERGE applies only to AttributePayload and ThingGroups"},
		{"override unknown property", "T", `{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {` + name + `}, "OverrideSettings": {"ThingName": "REPLACE"}}}}`, "template T: Resources.t.OverrideSettings.ThingName: not a property OverrideSettings can name; use AttributePayload, BillingGroup, ThingGroups, ThingTypeName"},
		{"override certificate merge", "T", `{"Resources": {"c": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}}, "OverrideSettings": {"Status": "MERGE"}}}}`, "template T: Resources.c.OverrideSettings.Status: MERGE applies only to AttributePayload and ThingGroups"},
		{"override on policy", "T", `{"Resources": {"p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "a"}, "OverrideSettings": {}}}}`, "template T: Resources.p.OverrideSettings: only AWS::IoT::Thing and AWS::IoT::Certificate resources take OverrideSettings"},
		{"override not object", "T", `{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {` + name + `}, "OverrideSettings": "REPLACE"}}}`, `template T: Resources.t.OverrideSettings: want an object of property names to DO_NOTHING, REPLACE, FAIL or MERGE, got "REPLACE"`},

		{"device configuration nested", "T", `{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {` + name + `}}}, "DeviceConfiguration": {"x": {"y": "z"}}}`, "template T: DeviceConfiguration.x: want a string, got an object"},
		{"device configuration list value", "T", `{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {` + name + `}}}, "DeviceConfiguration": {"x": ["a"]}}`, "template T: DeviceConfiguration.x: want a string, got a list"},
		{"device configuration a list", "T", `{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {` + name + `}}}, "DeviceConfiguration": []}`, "template T: DeviceConfiguration: want an object of names to string values, got a list"},
		{"device configuration split", "T", `{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {` + name + `}}}, "DeviceConfiguration": {"x": {"Fn::Split": [",", "a,b"]}}}`, "template T: DeviceConfiguration.x: Fn::Split gives a list; want a string"},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			_, err := ParseTemplate(tt.name, []byte(tt.body))
			if err == nil || err.Error() != tt.want {
				t.Errorf("ParseTemplate:\n got %v\nwant %s", err, tt.want)
			}
		})
	}
}

// Every intrinsic function with a shape AWS would refuse fails at load,
// naming the path of the call.
func TestParseTemplateFunctionShapes(t *testing.T) {
	const at = "template T: Resources.thing.Properties.ThingName"
	params := `"P": {"Type": "String"}`
	tests := []struct{ expr, want string }{
		{`{"Fn::Join": ["-"]}`, at + ": Fn::Join wants [delimiter, [values]]"},
		{`{"Fn::Join": "a-b"}`, at + ": Fn::Join wants [delimiter, [values]]"},
		{`{"Fn::Join": [1, ["a"]]}`, at + ": Fn::Join wants [delimiter, [values]]: the delimiter must be a literal string, got the number 1"},
		{`{"Fn::Join": ["-", "ab"]}`, at + `.Fn::Join[1]: want a list, got "ab"`},
		{`{"Fn::Join": ["-", {"Ref": "P"}]}`, at + ".Fn::Join[1]: Ref gives a string; want a list"},
		{`{"Fn::Join": ["-", [{"a": 1}]]}`, at + ".Fn::Join[1][0]: want a string, got an object"},
		{`{"Fn::Join": ["-", [["a"]]]}`, at + ".Fn::Join[1][0]: want a string, got a list"},
		{`{"Fn::Select": [0]}`, at + ": Fn::Select wants [index, [values]]"},
		{`{"Fn::Select": [-1, ["a"]]}`, at + ": Fn::Select index -1 is not a whole number from 0"},
		{`{"Fn::Select": [0.5, ["a"]]}`, at + ": Fn::Select index 0.5 is not a whole number from 0"},
		{`{"Fn::Select": ["one", ["a"]]}`, at + `: Fn::Select index "one" is not a whole number from 0`},
		{`{"Fn::Select": [[0], ["a"]]}`, at + ": Fn::Select index must be a number, a string of digits or a function, got a list"},
		{`{"Fn::Select": [2, ["a", "b"]]}`, at + ": Fn::Select index 2 is out of range for a list of 2"},
		{`{"Fn::Select": [0, "a,b"]}`, at + `.Fn::Select[1]: want a list, got "a,b"`},
		{`{"Fn::Select": [{"Fn::Split": [",", "0"]}, ["a"]]}`, at + ".Fn::Select[0]: Fn::Split gives a list; want a string"},
		{`{"Fn::Split": [","]}`, at + ": Fn::Split wants [delimiter, string]"},
		{`{"Fn::Split": ["", "a"]}`, at + `: Fn::Split wants [delimiter, string]: the delimiter must be a non-empty literal string, got ""`},
		{`{"Fn::Split": [",", ["a"]]}`, at + ".Fn::Split[1]: want a string, got a list"},
		{`{"Fn::Split": [",", "a,b"]}`, at + ": Fn::Split gives a list; want a string"},
		{`{"Fn::FindInMap": ["M", "k"]}`, at + ": Fn::FindInMap wants [map name, top-level key, second-level key]"},
		{`{"Fn::FindInMap": ["Nope", "k", "v"]}`, at + `: Fn::FindInMap: no mapping "Nope" under Mappings`},
		{`{"Fn::FindInMap": ["M", "nope", "v"]}`, at + `: Fn::FindInMap: mapping M has no key "nope"`},
		{`{"Fn::FindInMap": ["M", "k", "nope"]}`, at + `: Fn::FindInMap: mapping M.k has no key "nope"`},
		{`{"Fn::FindInMap": ["M", "k", "list"]}`, at + ": Fn::FindInMap gives a list; want a string"},
		{`{"Fn::FindInMap": ["M", ["k"], "v"]}`, at + ".Fn::FindInMap[1]: want a string, got a list"},
		{`{"Fn::Sub": 5}`, at + ": Fn::Sub wants a string or [string, {variables}]"},
		{`{"Fn::Sub": ["${P}"]}`, at + ": Fn::Sub wants a string or [string, {variables}]"},
		{`{"Fn::Sub": ["${P}", []]}`, at + ": Fn::Sub wants a string or [string, {variables}]"},
		{`{"Fn::Sub": ["${x}", {"x": ["a"]}]}`, at + ".Fn::Sub[1].x: want a string, got a list"},
		{`{"Fn::Sub": "a-${P"}`, at + ": Fn::Sub: ${ without a closing }"},
		{`{"Fn::Sub": "a-${}"}`, at + ": Fn::Sub: empty ${}"},
		{`{"Fn::Sub": "${thing.Arn}"}`, at + ": Fn::Sub: ${thing.Arn} names a resource attribute; provisioning templates have no Fn::GetAtt"},
		{`{"Ref": 1}`, at + ": Ref wants a parameter name, got the number 1"},
		{`{"Ref": ""}`, at + `: Ref wants a parameter name, got ""`},
		{`{"Ref": "P", "x": 1}`, at + ": Ref must be the only key of its object"},
		{`{"Fn::If": ["c", "a", "b"]}`, at + ": Fn::If is not supported in provisioning templates; use Ref, Fn::Join, Fn::Select, Fn::Split, Fn::FindInMap or Fn::Sub"},
		{`{"Fn::GetAtt": ["thing", "Arn"]}`, at + ": Fn::GetAtt is not supported in provisioning templates; use Ref, Fn::Join, Fn::Select, Fn::Split, Fn::FindInMap or Fn::Sub"},
		{`{"Fn::Base64": "x"}`, at + ": Fn::Base64 is not supported in provisioning templates; use Ref, Fn::Join, Fn::Select, Fn::Split, Fn::FindInMap or Fn::Sub"},
		{`{"Fn::Join": ["-", [{"Fn::Select": [0]}]]}`, at + ".Fn::Join[1][0]: Fn::Select wants [index, [values]]"},
	}
	for _, tt := range tests {
		body := `{"Parameters": {` + params + `}, "Mappings": {"M": {"k": {"v": "x", "list": ["a", "b"]}}},
		  "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": ` + tt.expr + `}}}}`
		_, err := ParseTemplate("T", []byte(body))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s:\n got %v\nwant %s", tt.expr, err, tt.want)
		}
	}
}

// AWS counts the body limit in characters: 10,000 two-byte characters fit.
func TestParseTemplateCountsCharacters(t *testing.T) {
	body := `{"Description": "` + strings.Repeat("é", 10000) + `", "Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "x"}}}}`
	if _, err := ParseTemplate("T", []byte(body)); err != nil {
		t.Fatal(err)
	}
}

// The docs' hook example Refs SerialNumber without declaring it. The
// emulator accepts it with a warning naming each path, takes the value from
// the request, and refuses a request without it as a missing parameter.
func TestUndeclaredRefIsAWarning(t *testing.T) {
	body, err := os.ReadFile("testdata/templates/docs-template-with-hook-example.json")
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := ParseTemplate("Hook", body)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`Resources.thing.Properties.ThingName.Fn::Join[1][1]: Ref to undeclared parameter "SerialNumber": taken from the request's parameters; declare it under Parameters`,
		`Resources.thing.Properties.ThingTypeName.Fn::Join[1][1]: Ref to undeclared parameter "SerialNumber": taken from the request's parameters; declare it under Parameters`,
	}
	if !reflect.DeepEqual(tmpl.Warnings, want) {
		t.Errorf("warnings\n got %q\nwant %q", tmpl.Warnings, want)
	}
	_, err = tmpl.Evaluate(map[string]string{ParamCertificateID: testCertID, "DeviceLocation": "Seattle"}, nil)
	var pe *ParameterError
	if !errors.As(err, &pe) || pe.Msg != "Missing value for parameter(s) SerialNumber required by template Hook." {
		t.Errorf("without SerialNumber: %v", err)
	}
	ev, err := tmpl.Evaluate(map[string]string{ParamCertificateID: testCertID, "DeviceLocation": "Seattle", "SerialNumber": "7"}, nil)
	if err != nil || ev.Thing.Name != "ThingPrefix_7" {
		t.Errorf("with SerialNumber: %v %+v", err, ev)
	}
	// Declared templates warn about nothing.
	gg, _ := os.ReadFile("testdata/templates/greengrass-lite-cfn-template-body.json")
	if tmpl, err := ParseTemplate("GG", gg); err != nil || len(tmpl.Warnings) != 0 {
		t.Errorf("greengrass template: %v %q", err, tmpl.Warnings)
	}
}

const testCertID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// outTemplate is a template whose DeviceConfiguration "out" is the
// expression under test, so a device's answer shows what it resolved to.
func outTemplate(params, mappings, out string) string {
	return `{"Parameters": {` + params + `}, "Mappings": {` + mappings + `},
	  "Resources": {"certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}}}},
	  "DeviceConfiguration": {"out": ` + out + `}}`
}

// deviceCase is one RegisterThing as a device makes it, over MQTT, against
// its own template, and what the device must hear back.
type deviceCase struct {
	name   string
	tmpl   string            // template body
	yaml   string            // NAME.yaml beside it, if any
	before map[string]string // a first RegisterThing (new certificate) that must be accepted
	params map[string]string
	send   func(token string, params map[string]string) any // the request body; nil sends {token, params}
	topic  string                                           // the request topic; "" is the case's template
	want   string                                           // accepted: deviceConfiguration.out, or thingName if the template has no "out"
	rej    *Rejection
}

func invalid(msg string) *Rejection {
	return &Rejection{StatusCode: 400, ErrorCode: CodeInvalidParameters, ErrorMessage: msg}
}

// runDeviceCases serves every case's template from one emulator (template
// NAME is T00, T01, ...) and runs each case as a device would.
func runDeviceCases(t *testing.T, cases []deviceCase) {
	t.Helper()
	dir := initDir(t)
	fixturePolicies(t, dir)
	for i, c := range cases {
		name := fmt.Sprintf("T%02d", i)
		if err := os.WriteFile(filepath.Join(dir, dirTemplates, name+".json"), []byte(c.tmpl), 0o644); err != nil {
			t.Fatal(err)
		}
		if c.yaml != "" {
			if err := os.WriteFile(filepath.Join(dir, dirTemplates, name+".yaml"), []byte(c.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	e := startEnv(t, Options{Dir: dir, Authorizer: permissive{}})
	cl := e.dialClaim(t)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			topic := c.topic
			if topic == "" {
				topic = fmt.Sprintf("$aws/provisioning-templates/T%02d/provision/json", i)
			}
			if c.before != nil {
				p := createCert(t, cl)
				if res, body := cl.call(topic, map[string]any{"certificateOwnershipToken": p.token, "parameters": c.before}); res != "accepted" {
					t.Fatalf("first RegisterThing %s: %v", res, body)
				}
			}
			p := createCert(t, cl)
			var body any = map[string]any{"certificateOwnershipToken": p.token, "parameters": c.params}
			if c.send != nil {
				body = c.send(p.token, c.params)
			}
			res, got := cl.call(topic, body)
			if c.rej != nil {
				// {T} in a message stands for the case's template name.
				msg := strings.ReplaceAll(c.rej.ErrorMessage, "{T}", fmt.Sprintf("T%02d", i))
				want := map[string]any{"statusCode": float64(c.rej.StatusCode), "errorCode": c.rej.ErrorCode, "errorMessage": msg}
				if res != "rejected" || !reflect.DeepEqual(got, want) {
					t.Errorf("got %s %v\nwant rejected %v", res, got, want)
				}
				if st := rejectionStatus(c.rej.ErrorCode); st != c.rej.StatusCode {
					t.Errorf("%s is %d in RejectionCodes, %d here", c.rej.ErrorCode, st, c.rej.StatusCode)
				}
				return
			}
			if res != "accepted" {
				t.Fatalf("got %s %v, want accepted", res, got)
			}
			dc, _ := got["deviceConfiguration"].(map[string]any)
			out, ok := dc["out"]
			if !ok {
				out = got["thingName"]
			}
			if s, _ := out.(string); strings.ReplaceAll(s, p.certID, "<certificateId>") != c.want {
				t.Errorf("got %q, want %q", out, c.want)
			}
		})
	}
}

// Every intrinsic function, with good inputs and with the inputs from a
// device that make it fail: the exact answer the device gets.
func TestIntrinsicFunctionsOnTheWire(t *testing.T) {
	const (
		p1   = `"A": {"Type": "String"}`
		p2   = `"A": {"Type": "String"}, "B": {"Type": "String"}`
		pDef = `"A": {"Type": "String", "Default": "dflt"}`
		maps = `"M": {"north": {"url": "https://n.example", "zones": ["n1", "n2"]}, "south": {"url": "https://s.example", "zones": ["s1"]}}, "Keys": {"k": {"region": "south"}}`
	)
	cases := []deviceCase{
		// Ref
		{name: "Ref declared", tmpl: outTemplate(p1, "", `{"Ref": "A"}`), params: map[string]string{"A": "va"}, want: "va"},
		{name: "Ref default", tmpl: outTemplate(pDef, "", `{"Ref": "A"}`), want: "dflt"},
		{name: "Ref default overridden", tmpl: outTemplate(pDef, "", `{"Ref": "A"}`), params: map[string]string{"A": "sent"}, want: "sent"},
		{name: "Ref empty value is a value", tmpl: outTemplate(p1, "", `{"Ref": "A"}`), params: map[string]string{"A": ""}, want: ""},
		{name: "Ref undeclared, sent", tmpl: outTemplate("", "", `{"Ref": "U"}`), params: map[string]string{"U": "vu"}, want: "vu"},
		{name: "Ref certificate id", tmpl: outTemplate("", "", `{"Ref": "AWS::IoT::Certificate::Id"}`), want: "<certificateId>"},
		{name: "Ref certificate id cannot be sent", tmpl: outTemplate("", "", `{"Ref": "AWS::IoT::Certificate::Id"}`), params: map[string]string{ParamCertificateID: "forged"}, want: "<certificateId>"},
		{name: "Ref region cannot be sent", tmpl: outTemplate("", "", `{"Ref": "AWS::Region"}`), params: map[string]string{"AWS::Region": "eu-west-1"}, want: "us-east-1"},
		{name: "Ref missing", tmpl: outTemplate(p1, "", `{"Ref": "A"}`), rej: invalid("Missing value for parameter(s) A required by template {T}.")},
		{name: "Ref missing, several", tmpl: outTemplate(p2, "", `{"Ref": "B"}`), rej: invalid("Missing value for parameter(s) A, B required by template {T}.")},
		{name: "Ref undeclared, missing", tmpl: outTemplate("", "", `{"Ref": "U"}`), rej: invalid("Missing value for parameter(s) U required by template {T}.")},
		// Fn::Join
		{name: "Join", tmpl: outTemplate(p1, "", `{"Fn::Join": ["-", ["x", {"Ref": "A"}, 3, true]]}`), params: map[string]string{"A": "a"}, want: "x-a-3-true"},
		{name: "Join empty list", tmpl: outTemplate("", "", `{"Fn::Join": ["-", []]}`), want: ""},
		{name: "Join a split", tmpl: outTemplate(p1, "", `{"Fn::Join": ["+", {"Fn::Split": [",", {"Ref": "A"}]}]}`), params: map[string]string{"A": "a,b,c"}, want: "a+b+c"},
		{name: "Join a mapping list", tmpl: outTemplate(p1, maps, `{"Fn::Join": [" ", {"Fn::FindInMap": ["M", {"Ref": "A"}, "zones"]}]}`), params: map[string]string{"A": "north"}, want: "n1 n2"},
		{name: "Join a mapping string", tmpl: outTemplate(p1, maps, `{"Fn::Join": [" ", {"Fn::FindInMap": ["M", {"Ref": "A"}, "url"]}]}`), params: map[string]string{"A": "north"},
			rej: invalid(`DeviceConfiguration.out.Fn::Join[1]: want a list, got "https://n.example".`)},
		// Fn::Select
		{name: "Select number", tmpl: outTemplate("", "", `{"Fn::Select": [1, ["a", "b"]]}`), want: "b"},
		{name: "Select string index", tmpl: outTemplate("", "", `{"Fn::Select": ["0", ["a", "b"]]}`), want: "a"},
		{name: "Select Ref index", tmpl: outTemplate(p1, "", `{"Fn::Select": [{"Ref": "A"}, ["a", "b", "c"]]}`), params: map[string]string{"A": "2"}, want: "c"},
		{name: "Select index out of range", tmpl: outTemplate(p1, "", `{"Fn::Select": [{"Ref": "A"}, ["a", "b"]]}`), params: map[string]string{"A": "5"},
			rej: invalid("DeviceConfiguration.out: Fn::Select index 5 is out of range for a list of 2.")},
		{name: "Select index not a number", tmpl: outTemplate(p1, "", `{"Fn::Select": [{"Ref": "A"}, ["a", "b"]]}`), params: map[string]string{"A": "x"},
			rej: invalid(`DeviceConfiguration.out: Fn::Select index "x" is not a whole number from 0.`)},
		{name: "Select negative index", tmpl: outTemplate(p1, "", `{"Fn::Select": [{"Ref": "A"}, ["a", "b"]]}`), params: map[string]string{"A": "-1"},
			rej: invalid(`DeviceConfiguration.out: Fn::Select index "-1" is not a whole number from 0.`)},
		{name: "Select from split", tmpl: outTemplate(p1, "", `{"Fn::Select": [1, {"Fn::Split": ["/", {"Ref": "A"}]}]}`), params: map[string]string{"A": "x/y"}, want: "y"},
		{name: "Select from a short split", tmpl: outTemplate(p1, "", `{"Fn::Select": [1, {"Fn::Split": ["/", {"Ref": "A"}]}]}`), params: map[string]string{"A": "x"},
			rej: invalid("DeviceConfiguration.out: Fn::Select index 1 is out of range for a list of 1.")},
		// Fn::Split (as a list: through Join or Select)
		{name: "Split keeps empty parts", tmpl: outTemplate(p1, "", `{"Fn::Join": ["|", {"Fn::Split": [",", {"Ref": "A"}]}]}`), params: map[string]string{"A": ",a,,"}, want: "|a||"},
		{name: "Split multi-character delimiter", tmpl: outTemplate("", "", `{"Fn::Select": [1, {"Fn::Split": ["::", "a::b::c"]}]}`), want: "b"},
		// Fn::FindInMap
		{name: "FindInMap literal", tmpl: outTemplate("", maps, `{"Fn::FindInMap": ["M", "south", "url"]}`), want: "https://s.example"},
		{name: "FindInMap Ref key", tmpl: outTemplate(p1, maps, `{"Fn::FindInMap": ["M", {"Ref": "A"}, "url"]}`), params: map[string]string{"A": "north"}, want: "https://n.example"},
		{name: "FindInMap nested key", tmpl: outTemplate("", maps, `{"Fn::FindInMap": ["M", {"Fn::FindInMap": ["Keys", "k", "region"]}, "url"]}`), want: "https://s.example"},
		{name: "FindInMap unknown key", tmpl: outTemplate(p1, maps, `{"Fn::FindInMap": ["M", {"Ref": "A"}, "url"]}`), params: map[string]string{"A": "Portland"},
			rej: invalid(`DeviceConfiguration.out: Fn::FindInMap: mapping M has no key "Portland".`)},
		{name: "FindInMap unknown second key", tmpl: outTemplate(p1, maps, `{"Fn::FindInMap": ["M", "north", {"Ref": "A"}]}`), params: map[string]string{"A": "port"},
			rej: invalid(`DeviceConfiguration.out: Fn::FindInMap: mapping M.north has no key "port".`)},
		{name: "FindInMap unknown map", tmpl: outTemplate(p1, maps, `{"Fn::FindInMap": [{"Ref": "A"}, "north", "url"]}`), params: map[string]string{"A": "Nope"},
			rej: invalid(`DeviceConfiguration.out: Fn::FindInMap: no mapping "Nope".`)},
		{name: "FindInMap list where a string is wanted", tmpl: outTemplate(p1, maps, `{"Fn::FindInMap": ["M", "north", {"Ref": "A"}]}`), params: map[string]string{"A": "zones"},
			rej: invalid("DeviceConfiguration.out: want a string, got a list.")},
		// Fn::Sub
		{name: "Sub string", tmpl: outTemplate(p2, "", `{"Fn::Sub": "${A}-${B}"}`), params: map[string]string{"A": "a", "B": "b"}, want: "a-b"},
		{name: "Sub variables", tmpl: outTemplate(p1, maps, `{"Fn::Sub": ["${A}@${where}", {"where": {"Fn::FindInMap": ["M", "north", "url"]}}]}`), params: map[string]string{"A": "a"}, want: "a@https://n.example"},
		{name: "Sub variable shadows a parameter", tmpl: outTemplate(p1, "", `{"Fn::Sub": ["${A}", {"A": "local"}]}`), params: map[string]string{"A": "param"}, want: "local"},
		{name: "Sub literal", tmpl: outTemplate("", "", `{"Fn::Sub": "${!A} and $A"}`), want: "${A} and $A"},
		{name: "Sub pseudo parameters", tmpl: outTemplate("", "", `{"Fn::Sub": "${AWS::Region}/${AWS::AccountId}/${AWS::IoT::Certificate::Id}"}`), want: "us-east-1/123456789012/<certificateId>"},
		{name: "Sub undeclared, sent", tmpl: outTemplate("", "", `{"Fn::Sub": "x-${U}"}`), params: map[string]string{"U": "u"}, want: "x-u"},
		{name: "Sub missing", tmpl: outTemplate("", "", `{"Fn::Sub": "x-${U}"}`), rej: invalid("Missing value for parameter(s) U required by template {T}.")},
	}
	runDeviceCases(t, cases)
}

// Every way a RegisterThing can fail after the template loaded, and the
// exact rejection the device receives.
func TestRegisterThingRejections(t *testing.T) {
	certOnly := `"certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}}}`
	thing := func(params, props string) string {
		return `{"Parameters": {` + params + `}, "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {` + props + `}}, ` + certOnly + `}}`
	}
	certT := func(props string) string {
		return `{"Parameters": {"P": {"Type": "String"}}, "Resources": {"certificate": {"Type": "AWS::IoT::Certificate", "Properties": {` + props + `}}}}`
	}
	policyT := func(props string) string {
		return `{"Parameters": {"P": {"Type": "String"}}, "Resources": {"policy": {"Type": "AWS::IoT::Policy", "Properties": {` + props + `}}, ` + certOnly + `}}`
	}
	pName := `"N": {"Type": "String"}`
	ok := thing(pName, `"ThingName": {"Ref": "N"}`)
	long := strings.Repeat("k", 2049)
	cases := []deviceCase{
		{name: "accepted", tmpl: ok, params: map[string]string{"N": "dev-1"}, want: "dev-1"},
		{name: "payload not JSON", tmpl: ok, send: func(string, map[string]string) any { return "not json" },
			rej: &Rejection{400, CodeInvalidPayload, "Invalid request payload: invalid character 'o' in literal null (expecting 'u')"}},
		{name: "parameters not strings", tmpl: ok, send: func(tok string, _ map[string]string) any {
			return map[string]any{"certificateOwnershipToken": tok, "parameters": map[string]any{"N": 5}}
		}, rej: &Rejection{400, CodeInvalidPayload, "Invalid request payload: json: cannot unmarshal number into Go struct field registerThingRequest.parameters of type string"}},
		{name: "template not found", tmpl: ok, topic: "$aws/provisioning-templates/NoSuchTemplate/provision/json", params: map[string]string{"N": "x"},
			rej: &Rejection{404, CodeResourceNotFound, "Template NoSuchTemplate not found."}},
		{name: "template disabled", tmpl: ok, yaml: "enabled: false\n", params: map[string]string{"N": "x"},
			rej: &Rejection{403, CodeAccessDenied, "Template {T} is disabled."}},
		{name: "template enabled explicitly", tmpl: ok, yaml: "enabled: true\n", params: map[string]string{"N": "on-1"}, want: "on-1"},
		{name: "token empty", tmpl: ok, send: func(string, map[string]string) any { return map[string]any{"parameters": map[string]string{"N": "x"}} },
			rej: &Rejection{400, CodeInvalidCertificateOwnershipToken, "Certificate ownership token cannot be empty."}},
		{name: "token unknown", tmpl: ok, send: func(string, map[string]string) any {
			return map[string]any{"certificateOwnershipToken": "nope", "parameters": map[string]string{"N": "x"}}
		}, rej: &Rejection{400, CodeInvalidCertificateOwnershipToken, "Certificate ownership token is invalid."}},
		{name: "parameter name too long", tmpl: ok, params: map[string]string{"N": "x", long: "v"},
			rej: invalid(fmt.Sprintf("Parameter name %.40q... is 2049 characters; a name has 1-2048.", long))},
		{name: "parameter value too long", tmpl: ok, params: map[string]string{"N": strings.Repeat("v", 4097)},
			rej: invalid("Parameter N is 4097 characters; a value has at most 4096.")},
		{name: "parameter value at the limit", tmpl: thing(pName, `"ThingName": "fine", "AttributePayload": {"a": {"Fn::Select": [0, {"Fn::Split": ["|", {"Ref": "N"}]}]}}`),
			params: map[string]string{"N": "ok|" + strings.Repeat("v", 4093)}, want: "fine"},
		{name: "thing name invalid", tmpl: ok, params: map[string]string{"N": "bad name"},
			rej: invalid(`Thing name "bad name" is invalid: use 1-128 characters from a-z A-Z 0-9 : _ -.`)},
		{name: "thing name too long", tmpl: ok, params: map[string]string{"N": strings.Repeat("n", 129)},
			rej: invalid(`Thing name "` + strings.Repeat("n", 129) + `" is invalid: use 1-128 characters from a-z A-Z 0-9 : _ -.`)},
		{name: "thing name at the limit", tmpl: ok, params: map[string]string{"N": strings.Repeat("n", 128)}, want: strings.Repeat("n", 128)},
		{name: "thing name empty", tmpl: ok, params: map[string]string{"N": ""},
			rej: invalid(`Thing name "" is invalid: use 1-128 characters from a-z A-Z 0-9 : _ -.`)},
		{name: "attribute value invalid", tmpl: thing(pName, `"ThingName": "t", "AttributePayload": {"a": {"Ref": "N"}}`), params: map[string]string{"N": "two words"},
			rej: invalid(`Resources.thing.Properties.AttributePayload.a: "two words" is not an attribute value: use at most 800 characters from a-z A-Z 0-9 _ . , @ / : # = [ ] -.`)},
		{name: "attribute name invalid", tmpl: thing("", `"ThingName": "t", "AttributePayload": {"a b": "x"}`),
			rej: invalid(`Resources.thing.Properties.AttributePayload.a b: "a b" is not an attribute name: use 1-128 characters from a-z A-Z 0-9 _ . , @ / : # -.`)},
		{name: "thing group invalid", tmpl: thing(pName, `"ThingName": "t", "ThingGroups": ["ok", {"Ref": "N"}]`), params: map[string]string{"N": "a/b"},
			rej: invalid(`Resources.thing.Properties.ThingGroups[1]: "a/b" is not a thing group name: use 1-128 characters from a-z A-Z 0-9 : _ -.`)},
		{name: "thing type invalid", tmpl: thing(pName, `"ThingName": "t", "ThingTypeName": {"Ref": "N"}`), params: map[string]string{"N": "a b"},
			rej: invalid(`Resources.thing.Properties.ThingTypeName: "a b" is not a valid name: use 1-128 characters from a-z A-Z 0-9 : _ -.`)},
		{name: "billing group invalid", tmpl: thing(pName, `"ThingName": "t", "BillingGroup": {"Ref": "N"}`), params: map[string]string{"N": ""},
			rej: invalid(`Resources.thing.Properties.BillingGroup: "" is not a valid name: use 1-128 characters from a-z A-Z 0-9 : _ -.`)},
		{name: "status from a parameter", tmpl: certT(`"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": {"Ref": "P"}`), params: map[string]string{"P": "Paused"},
			rej: invalid(`Resources.certificate.Properties.Status: "Paused" is not a certificate status; use ACTIVE or INACTIVE.`)},
		{name: "principal type from a parameter", tmpl: certT(`"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "ThingPrincipalType": {"Ref": "P"}`), params: map[string]string{"P": "SHARED"},
			rej: invalid(`Resources.certificate.Properties.ThingPrincipalType: "SHARED": use EXCLUSIVE_THING or NON_EXCLUSIVE_THING.`)},
		{name: "certificate id of another certificate", tmpl: certT(`"CertificateId": {"Ref": "P"}`), params: map[string]string{"P": "abc"},
			rej: invalid(`Template certificate resource names certificate "abc", not the one being registered; use {"Ref": "AWS::IoT::Certificate::Id"}.`)},
		{name: "CSR not a CSR", tmpl: certT(`"CertificateSigningRequest": {"Ref": "P"}`), params: map[string]string{"P": "garbage"},
			rej: invalid("Template certificate resource: invalid certificate signing request: no PEM block found.")},
		{name: "CSR of another key", tmpl: certT(`"CertificateSigningRequest": {"Ref": "P"}`), params: map[string]string{"P": csrPEM(t, newKey(t))},
			rej: invalid("Template certificate resource: the CertificateSigningRequest does not carry the public key of the certificate being registered.")},
		{name: "policy document string from a parameter", tmpl: policyT(`"PolicyDocument": {"Ref": "P"}`), params: map[string]string{"P": "{oops"},
			rej: invalid("Resources.policy.Properties.PolicyDocument: the string is not a JSON policy document object.")},
		{name: "policy document from a parameter", tmpl: policyT(`"PolicyDocument": {"Ref": "P"}`), params: map[string]string{"P": `{"Version":"2012-10-17","Statement":[]}`}, want: ""},
		{name: "policy not found", tmpl: policyT(`"PolicyName": "no_such_policy"`), params: map[string]string{"P": "x"},
			rej: &Rejection{404, CodeResourceNotFound, "Policy no_such_policy not found."}},
		{name: "policy name from a parameter, invalid", tmpl: policyT(`"PolicyName": {"Ref": "P"}`), params: map[string]string{"P": "a b"},
			rej: invalid(`Resources.policy.Properties.PolicyName: "a b" is not a policy name.`)},
		{name: "policy name from a parameter", tmpl: policyT(`"PolicyName": {"Ref": "P"}`), params: map[string]string{"P": "demo_thing_policy"}, want: ""},
		{name: "override FAIL on a differing type", tmpl: `{"Parameters": {"Ty": {"Type": "String"}}, "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "shared-thing", "ThingTypeName": {"Ref": "Ty"}, "ThingGroups": ["g1"]},
			  "OverrideSettings": {"ThingTypeName": "FAIL", "ThingGroups": "FAIL"}}, ` + certOnly + `}}`,
			before: map[string]string{"Ty": "TypeA"}, params: map[string]string{"Ty": "TypeB"},
			rej: &Rejection{409, CodeResourceConflict, "Thing shared-thing exists and its ThingTypeName differs; the template's OverrideSettings say FAIL."}},
	}
	runDeviceCases(t, cases)
}

// A rejected RegisterThing changes nothing: the same token works once the
// device sends what was missing.
func TestRejectedRegisterThingKeepsToken(t *testing.T) {
	dir := initDir(t)
	tmpl := `{"Parameters": {"N": {"Type": "String"}}, "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "N"}}}}}`
	if err := os.WriteFile(filepath.Join(dir, dirTemplates, "Retry.json"), []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, Options{Dir: dir, Authorizer: permissive{}})
	cl := e.dialClaim(t)
	p := createCert(t, cl)
	topic := "$aws/provisioning-templates/Retry/provision/json"
	if res, body := cl.call(topic, map[string]any{"certificateOwnershipToken": p.token, "parameters": map[string]string{"N": "bad name"}}); res != "rejected" {
		t.Fatalf("bad name: %s %v", res, body)
	}
	reg, _ := ReadRegistry(dir)
	if len(reg.Things) != 0 || reg.Certificates[p.certID].Status != StatusPendingActivation {
		t.Fatalf("a rejected request changed the registry: %+v", reg.Things)
	}
	if res, body := cl.call(topic, map[string]any{"certificateOwnershipToken": p.token, "parameters": map[string]string{"N": "good-name"}}); res != "accepted" || body["thingName"] != "good-name" {
		t.Fatalf("retry: %s %v", res, body)
	}
}

// No template shape makes the parser or the evaluator panic: every value of
// a template that exercises everything is replaced, one at a time, by each
// of a set of malformed shapes; each result either fails to load or
// evaluates (or is refused) without a panic.
func TestMalformedTemplatesDoNotPanic(t *testing.T) {
	base, err := os.ReadFile("testdata/templates/fn-all.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(base, &doc); err != nil {
		t.Fatal(err)
	}
	shapes := []any{
		nil, 0.5, -1.0, 1e300, "", "x", "${", true, []any{}, []any{nil}, map[string]any{},
		map[string]any{"Ref": nil}, map[string]any{"Ref": []any{}}, map[string]any{"Fn::Join": nil},
		map[string]any{"Fn::Join": []any{nil, nil}}, map[string]any{"Fn::Select": []any{"9", []any{}}},
		map[string]any{"Fn::Select": []any{map[string]any{"Ref": "Model"}, map[string]any{"Fn::Split": []any{",", "a"}}}},
		map[string]any{"Fn::Split": []any{",", nil}}, map[string]any{"Fn::FindInMap": []any{nil, nil, nil}},
		map[string]any{"Fn::FindInMap": []any{"RegionTable", map[string]any{"Ref": "Model"}, "Endpoint"}},
		map[string]any{"Fn::Sub": []any{"${a}", nil}}, map[string]any{"Fn::Sub": map[string]any{}},
		map[string]any{"Fn::Sub": []any{nil, map[string]any{}}}, map[string]any{"Fn::GetAtt": "x"},
		map[string]any{"Fn::": nil}, map[string]any{"Ref": "Model", "Fn::Join": []any{}},
	}
	params := map[string]string{ParamCertificateID: testCertID, "SerialNumber": "1", "Region": "south", "Model": "x"}
	loaded, refused := 0, 0
	var walk func(v any, set func(any))
	try := func() {
		b, _ := json.Marshal(doc)
		tmpl, err := ParseTemplate("Fuzz", b)
		if err != nil {
			refused++
			return
		}
		loaded++
		_, _ = tmpl.Evaluate(params, map[string]string{"AWS::Region": "us-east-1"})
	}
	walk = func(v any, set func(any)) {
		for _, s := range shapes {
			set(s)
			try()
		}
		set(v)
		switch x := v.(type) {
		case map[string]any:
			for k, vv := range x {
				walk(vv, func(n any) { x[k] = n })
			}
		case []any:
			for i, vv := range x {
				walk(vv, func(n any) { x[i] = n })
			}
		}
	}
	walk(doc, func(n any) { doc = n })
	if loaded == 0 || refused == 0 {
		t.Errorf("loaded %d, refused %d: the sweep did not reach both outcomes", loaded, refused)
	}
	t.Logf("%d variants loaded, %d refused", loaded, refused)
}

// FuzzParseTemplate: go test -fuzz FuzzParseTemplate ./cloudsim. The seeds
// (every testdata template) run as a normal test.
func FuzzParseTemplate(f *testing.F) {
	paths, _ := filepath.Glob("testdata/templates/*.json")
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		tmpl, err := ParseTemplate("Fuzz", body)
		if err != nil {
			return
		}
		_, _ = tmpl.Evaluate(map[string]string{ParamCertificateID: testCertID, "SerialNumber": "1"}, nil)
	})
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
		"Connect:drop":                `unknown operation "Connect"; use CreateCertificateFromCsr, CreateKeysAndCertificate, RegisterThing or *`,
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
