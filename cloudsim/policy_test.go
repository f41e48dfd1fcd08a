package cloudsim

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// policyCase is one request against one set of policies.
type policyCase struct {
	name     string
	p        Principal
	action   Action
	resource string // client id, topic or filter, as the broker passes it
	want     Effect
}

func runPolicyCases(t *testing.T, region, account string, pols []*Policy, cases []policyCase) {
	t.Helper()
	for _, c := range cases {
		got := Evaluate(pols, c.p, c.action, ResourceARN(region, account, c.action, c.resource))
		if got != c.want {
			t.Errorf("%s: %s %s: %v, want %v", c.name, c.action, c.resource, got, c.want)
		}
	}
}

func mustParse(t *testing.T, name, doc string) *Policy {
	t.Helper()
	p, err := ParsePolicy(name, []byte(doc))
	if err != nil {
		t.Fatalf("policy %s: %v", name, err)
	}
	return p
}

// readPolicy reads a reference policy and gives it the region, account and
// template the placeholders stand for.
func readPolicy(t *testing.T, file string, repl ...string) *Policy {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	return mustParse(t, file, strings.NewReplacer(repl...).Replace(string(b)))
}

// initPolicy is a policy exactly as Init writes it.
func initPolicy(t *testing.T, name string) *Policy {
	t.Helper()
	docs, err := initialPolicies()
	if err != nil {
		t.Fatal(err)
	}
	doc, ok := docs[name]
	if !ok {
		t.Fatalf("init writes no policy %s", name)
	}
	return mustParse(t, name, string(doc))
}

var claimant = Principal{ClientID: "claim-1", Claim: true, Status: StatusActive}

// The Greengrass claim policy as init writes it: the CSR flow and the
// template init writes, nothing else. A mismatch between the template name
// in the policy and the one in templates/ would refuse every RegisterThing.
func TestGreengrassClaimPolicy(t *testing.T) {
	pol := initPolicy(t, claimPolicyName)
	const tmpl = "$aws/provisioning-templates/" + DefaultTemplateName + "/provision/"
	runPolicyCases(t, defaultRegion, defaultAccountID, []*Policy{pol}, []policyCase{
		{"any client id connects", claimant, ActionConnect, "whatever", Allowed},
		{"CSR request", claimant, ActionPublish, "$aws/certificates/create-from-csr/json", Allowed},
		{"CSR request cbor", claimant, ActionPublish, "$aws/certificates/create-from-csr/cbor", Allowed},
		{"CSR answer", claimant, ActionReceive, "$aws/certificates/create-from-csr/json/accepted", Allowed},
		{"CSR answer filter", claimant, ActionSubscribe, "$aws/certificates/create-from-csr/json/accepted", Allowed},
		// A filter is matched as a string: "+" is just a character under "*".
		{"CSR answers by +", claimant, ActionSubscribe, "$aws/certificates/create-from-csr/+/accepted", Allowed},
		{"# is not special", claimant, ActionSubscribe, "$aws/certificates/#", NoMatch},
		{"RegisterThing", claimant, ActionPublish, tmpl + "json", Allowed},
		{"RegisterThing answer", claimant, ActionReceive, tmpl + "json/rejected", Allowed},
		{"Greengrass's own template name", claimant, ActionPublish, "$aws/provisioning-templates/GGFleetProvisioningTemplate/provision/json", NoMatch},
		{"CreateKeysAndCertificate", claimant, ActionPublish, "$aws/certificates/create/json", NoMatch},
		{"telemetry", claimant, ActionPublish, "devices/x/telemetry", NoMatch},
		{"shadow", claimant, ActionSubscribe, "$aws/things/x/shadow/get/accepted", NoMatch},
	})
	// The template name in the policy is the one init serves.
	if !strings.Contains(pol.statements[1].resources[1].String(), "/provisioning-templates/"+DefaultTemplateName+"/") {
		t.Errorf("claim policy names %s, init serves %s", pol.statements[1].resources[1], DefaultTemplateName)
	}
}

// The AWS docs' sample claim policy allows $aws/certificates/create/*, which
// does not cover create-from-csr: AWS refuses the CSR flow under it, and so
// must the emulator.
func TestDocsClaimPolicyRefusesCSR(t *testing.T) {
	for name, pol := range map[string]*Policy{
		"reference": readPolicy(t, "docs-claim-policy-create-keys.json", "aws-region", defaultRegion, "aws-account-id", defaultAccountID, "templateName", DefaultTemplateName),
		"init":      initPolicy(t, createKeysClaimPolicyName),
	} {
		t.Run(name, func(t *testing.T) {
			runPolicyCases(t, defaultRegion, defaultAccountID, []*Policy{pol}, []policyCase{
				{"CreateKeys json", claimant, ActionPublish, "$aws/certificates/create/json", Allowed},
				{"CreateKeys cbor", claimant, ActionPublish, "$aws/certificates/create/cbor", Allowed},
				{"CreateKeys answer", claimant, ActionReceive, "$aws/certificates/create/json/accepted", Allowed},
				{"CreateKeys answers", claimant, ActionSubscribe, "$aws/certificates/create/json/+", Allowed},
				{"CSR", claimant, ActionPublish, "$aws/certificates/create-from-csr/json", NoMatch},
				{"CSR answer", claimant, ActionReceive, "$aws/certificates/create-from-csr/json/accepted", NoMatch},
				{"CSR subscribe", claimant, ActionSubscribe, "$aws/certificates/create-from-csr/json/accepted", NoMatch},
				{"RegisterThing", claimant, ActionPublish, "$aws/provisioning-templates/" + DefaultTemplateName + "/provision/json", Allowed},
			})
		})
	}
}

// The embedded C SDK's claim policy, in its own region and account.
func TestEmbeddedCClaimPolicy(t *testing.T) {
	pol := readPolicy(t, "embeddedc-claim-policy-csr.json")
	runPolicyCases(t, "us-west-2", "012345678901", []*Policy{pol}, []policyCase{
		{"CSR", claimant, ActionPublish, "$aws/certificates/create-from-csr/json", Allowed},
		{"CSR answers", claimant, ActionSubscribe, "$aws/certificates/create-from-csr/json/accepted", Allowed},
		{"demo template", claimant, ActionPublish, "$aws/provisioning-templates/demo_template/provision/json", Allowed},
		{"other template", claimant, ActionPublish, "$aws/provisioning-templates/" + DefaultTemplateName + "/provision/json", NoMatch},
		{"CreateKeys", claimant, ActionPublish, "$aws/certificates/create/json", NoMatch},
	})
	// The same document in another region grants nothing but Connect ("*").
	runPolicyCases(t, defaultRegion, defaultAccountID, []*Policy{pol}, []policyCase{
		{"other region", claimant, ActionPublish, "$aws/certificates/create-from-csr/json", NoMatch},
		{"connect is *", claimant, ActionConnect, "x", Allowed},
	})
}

func TestGreengrassDevicePolicy(t *testing.T) {
	thing := initPolicy(t, "GreengrassV2IoTThingPolicy-GreengrassFleetProvisioning")
	roleAlias := initPolicy(t, "GreengrassV2TokenExchangeRoleAliasPolicy-GreengrassFleetProvisioning")
	dev := Principal{ClientID: "gg_1", ThingName: "gg_1", Status: StatusActive}
	noThing := Principal{ClientID: "gg_1", Status: StatusActive}
	runPolicyCases(t, defaultRegion, defaultAccountID, []*Policy{thing, roleAlias}, []policyCase{
		{"client id = thing name", dev, ActionConnect, "gg_1", Allowed},
		{"client id starts with thing name", dev, ActionConnect, "gg_1-ipc", Allowed},
		{"another client id", dev, ActionConnect, "gg_2", NoMatch},
		{"thing name is a prefix of the client id only", dev, ActionConnect, "x-gg_1", NoMatch},
		{"no thing attached", noThing, ActionConnect, "gg_1", NoMatch},
		{"publish anything", dev, ActionPublish, "devices/gg_1/telemetry", Allowed},
		{"subscribe anything", dev, ActionSubscribe, "#", Allowed},
		{"receive anything", dev, ActionReceive, "$aws/things/gg_1/shadow/update/accepted", Allowed},
	})
	// The role alias policy alone grants no MQTT action.
	runPolicyCases(t, defaultRegion, defaultAccountID, []*Policy{roleAlias}, []policyCase{
		{"role alias only", dev, ActionPublish, "x", NoMatch},
	})
}

func TestPolicyEvaluation(t *testing.T) {
	const arn = "arn:aws:iot:us-east-1:123456789012:"
	allowAll := mustParse(t, "allowAll", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iot:*","Resource":"*"}}`)
	denySecret := mustParse(t, "denySecret", `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"iot:Publish","Resource":"`+arn+`topic/secret/*"}]}`)
	both := mustParse(t, "both", `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"iot:*","Resource":"*"},
		{"Effect":"Deny","Action":["iot:Publish","iot:Receive"],"Resource":"`+arn+`topic/secret/*"}]}`)
	wild := mustParse(t, "wild", `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"iot:Publish*","Resource":["`+arn+`topic/dev/???","`+arn+`topic/tree/*"]},
		{"Effect":"Allow","Action":"iot:subscribe","Resource":"`+arn+`topicfilter/plus/+"},
		{"Effect":"Allow","Action":"greengrass:*","Resource":"*"},
		{"Effect":"Allow","Action":"iot:Receive","Resource":"`+arn+`topic/lit${*}star"}]}`)
	vars := mustParse(t, "vars", `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"iot:Publish","Resource":[
			"`+arn+`topic/clients/${iot:ClientId}/*",
			"`+arn+`topic/attached/${iot:Connection.Thing.IsAttached}",
			"`+arn+`topic/type/${iot:Connection.Thing.ThingTypeName}",
			"`+arn+`topic/site/${iot:Connection.Thing.Attributes[site]}",
			"`+arn+`topic/unknown/${iot:Certificate.Subject.CommonName}"]},
		{"Effect":"Deny","Action":"iot:Publish","Resource":"`+arn+`topic/clients/${iot:Connection.Thing.ThingName}/deny"}]}`)
	denyUnresolved := mustParse(t, "denyUnresolved", `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"iot:Publish","Resource":"*"},
		{"Effect":"Deny","Action":"iot:Publish","Resource":"`+arn+`topic/x/${iot:Connection.Thing.ThingName}"}]}`)
	old := mustParse(t, "old", `{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Action":"iot:Publish","Resource":"`+arn+`topic/${iot:ClientId}"}]}`)
	noVersion := mustParse(t, "noVersion", `{"Statement":[{"Effect":"Allow","Action":"iot:Publish","Resource":"`+arn+`topic/${iot:ClientId}"}]}`)
	cond := mustParse(t, "cond", `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"iot:Publish","Resource":"*","Condition":{"Bool":{"iot:Connection.Thing.IsAttached":"true"}}},
		{"Effect":"Allow","Action":"iot:Subscribe","Resource":"*"},
		{"Effect":"Deny","Action":"iot:Subscribe","Resource":"`+arn+`topicfilter/c/*","Condition":{"Bool":{"iot:Connection.Thing.IsAttached":"false"}}}]}`)
	nots := mustParse(t, "nots", `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","NotAction":"iot:Publish","Resource":"*"},
		{"Effect":"Allow","Action":"iot:Publish","NotResource":["`+arn+`topic/private/*","`+arn+`topic/own/${iot:Connection.Thing.ThingName}"]}]}`)

	p := Principal{ClientID: "c1", Status: StatusActive}
	thing := Principal{ClientID: "c1", ThingName: "t1", ThingTypeName: "lamp", ThingAttributes: map[string]string{"site": "sea"}, Status: StatusActive}
	star := Principal{ClientID: "c*", Status: StatusActive}
	set := func(pols ...*Policy) []*Policy { return pols }
	for _, tc := range []struct {
		pols  []*Policy
		cases []policyCase
	}{
		{set(both), []policyCase{
			{"deny beats allow", p, ActionPublish, "secret/a", Denied},
			{"deny beats allow on receive", p, ActionReceive, "secret/a/b", Denied},
			{"allow elsewhere", p, ActionPublish, "open/a", Allowed},
			{"deny names publish only", p, ActionSubscribe, "secret/a", Allowed},
		}},
		{set(allowAll, denySecret), []policyCase{
			{"deny in another policy wins", p, ActionPublish, "secret/x", Denied},
			{"allow from the first policy", p, ActionPublish, "public/x", Allowed},
		}},
		{set(denySecret), []policyCase{
			{"nothing allowed is denied", p, ActionPublish, "public/x", NoMatch},
		}},
		{nil, []policyCase{
			{"no policy", p, ActionConnect, "c1", NoMatch},
		}},
		{set(wild), []policyCase{
			{"? is one character", p, ActionPublish, "dev/abc", Allowed},
			{"? needs a character", p, ActionPublish, "dev/ab", NoMatch},
			{"? is only one", p, ActionPublish, "dev/abcd", NoMatch},
			{"? matches /", p, ActionPublish, "dev/a/c", Allowed},
			{"* crosses levels", p, ActionPublish, "tree/a/b/c", Allowed},
			{"* matches nothing too", p, ActionPublish, "tree/", Allowed},
			{"action wildcard misses Receive", p, ActionReceive, "tree/a", NoMatch},
			{"action names are case-insensitive", p, ActionSubscribe, "plus/+", Allowed},
			{"+ in a resource is literal", p, ActionSubscribe, "plus/a", NoMatch},
			{"greengrass:* is no MQTT action", p, ActionConnect, "c1", NoMatch},
			{"${*} is a literal star", p, ActionReceive, "lit*star", Allowed},
			{"${*} is no wildcard", p, ActionReceive, "litXstar", NoMatch},
			{"resources are case-sensitive", p, ActionPublish, "TREE/a", NoMatch},
		}},
		{set(vars), []policyCase{
			{"client id", p, ActionPublish, "clients/c1/x", Allowed},
			{"another client id", p, ActionPublish, "clients/c2/x", NoMatch},
			{"a value is literal, not a wildcard", star, ActionPublish, "clients/cX/x", NoMatch},
			{"a value with a star matches itself", star, ActionPublish, "clients/c*/x", Allowed},
			{"not attached", p, ActionPublish, "attached/false", Allowed},
			{"attached", thing, ActionPublish, "attached/true", Allowed},
			{"attached is not false", thing, ActionPublish, "attached/false", NoMatch},
			{"thing type", thing, ActionPublish, "type/lamp", Allowed},
			{"no thing type", p, ActionPublish, "type/", NoMatch},
			{"attribute", thing, ActionPublish, "site/sea", Allowed},
			{"other attribute value", thing, ActionPublish, "site/land", NoMatch},
			{"unsupported variable matches nothing", p, ActionPublish, "unknown/", NoMatch},
			{"deny with thing name", Principal{ClientID: "t1", ThingName: "t1", Status: StatusActive}, ActionPublish, "clients/t1/deny", Denied},
		}},
		{set(denyUnresolved), []policyCase{
			// IAM: a statement whose variable has no value does not match,
			// a Deny included.
			{"deny with unresolved variable", p, ActionPublish, "x/", Allowed},
			{"deny with resolved variable", thing, ActionPublish, "x/t1", Denied},
		}},
		{set(old), []policyCase{
			{"2008: variables are text", p, ActionPublish, "c1", NoMatch},
			{"2008: literal ${...}", p, ActionPublish, "${iot:ClientId}", Allowed},
		}},
		{set(noVersion), []policyCase{
			{"no Version is 2008", p, ActionPublish, "c1", NoMatch},
		}},
		{set(cond), []policyCase{
			{"conditional allow grants nothing", thing, ActionPublish, "a", NoMatch},
			{"conditional deny denies", thing, ActionSubscribe, "c/x", Denied},
			{"plain allow still allows", thing, ActionSubscribe, "d/x", Allowed},
		}},
		{set(nots), []policyCase{
			{"NotAction allows the others", p, ActionSubscribe, "a", Allowed},
			{"NotResource allows outside", thing, ActionPublish, "public/x", Allowed},
			{"NotResource excludes", thing, ActionPublish, "private/x", NoMatch},
			{"NotResource with own thing excluded", thing, ActionPublish, "own/t1", NoMatch},
			{"NotResource with unresolved variable grants nothing", p, ActionPublish, "public/x", NoMatch},
		}},
	} {
		runPolicyCases(t, "us-east-1", "123456789012", tc.pols, tc.cases)
	}
}

func TestDefaultAuthorizer(t *testing.T) {
	pol := mustParse(t, "p", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:eu-west-1:999999999999:topic/a"}]}`)
	p := Principal{Status: StatusActive, Policies: []*Policy{pol}}
	if !(DefaultAuthorizer{Region: "eu-west-1", AccountID: "999999999999"}).Authorize(p, ActionPublish, "a") {
		t.Error("policy for the emulator's region and account refused")
	}
	if (DefaultAuthorizer{}).Authorize(p, ActionPublish, "a") {
		t.Error("policy for another region allowed")
	}
	p.Status = StatusInactive
	if (DefaultAuthorizer{Region: "eu-west-1", AccountID: "999999999999"}).Authorize(p, ActionPublish, "a") {
		t.Error("an INACTIVE certificate's policies allowed a publish")
	}
}

// Each malformed document fails with the message a user sees.
func TestParsePolicyErrors(t *testing.T) {
	const st = `{"Version":"2012-10-17","Statement":[`
	for _, c := range []struct{ doc, want string }{
		{`{`, "not a JSON policy document: unexpected end of JSON input"},
		{`[]`, "not a JSON policy document: json: cannot unmarshal array into Go value of type map[string]json.RawMessage"},
		{`null`, "not a JSON policy document: null"},
		{`{"Version":"2012-10-17"}`, "no Statement"},
		{`{"Version":"2012-10-17","Statements":[]}`, `unknown element "Statements" (want Version, Statement, Id)`},
		{`{"Version":"2012-10-18","Statement":[]}`, `Version "2012-10-18" is not "2012-10-17" or "2008-10-17"`},
		{st + `]}`, "Statement is empty"},
		{`{"Statement":"x"}`, "Statement is neither an object nor a list of objects"},
		{st + `5]}`, "statement 1 is not a JSON object"},
		{st + `{"Effect":"allow","Action":"iot:*","Resource":"*"}]}`, `statement 1: Effect "allow" is not "Allow" or "Deny"`},
		{st + `{"Effect":"Allow","Action":"iot:*","Resource":"*"},{"Sid":"B","Action":"iot:*","Resource":"*"}]}`, `statement 2 (Sid "B"): no Effect`},
		{st + `{"Effect":"Allow","Resource":"*"}]}`, "statement 1: no Action"},
		{st + `{"Effect":"Allow","Action":"iot:*","NotAction":"iot:Publish","Resource":"*"}]}`, "statement 1: both Action and NotAction"},
		{st + `{"Effect":"Allow","Action":"Publish","Resource":"*"}]}`, `statement 1: action "Publish" is not "*" or service:action (e.g. iot:Publish)`},
		{st + `{"Effect":"Allow","Action":[],"Resource":"*"}]}`, "statement 1: Action is empty"},
		{st + `{"Effect":"Allow","Action":"iot:*","Resource":5}]}`, "statement 1: Resource is neither a string nor a list of strings"},
		{st + `{"Effect":"Allow","Action":"iot:*","Resource":["*",""]}]}`, "statement 1: Resource has an empty entry"},
		{st + `{"Effect":"Allow","Action":"iot:*"}]}`, "statement 1: no Resource"},
		{st + `{"Effect":"Allow","Action":"iot:*","Resource":"*","Principal":"*"}]}`, "statement 1: Principal is not allowed in an IoT policy"},
		{st + `{"Effect":"Allow","Action":"iot:*","Resources":"*"}]}`, `statement 1: unknown element "Resources"`},
		{st + `{"Effect":"Allow","Action":"iot:*","Resource":"topic/${iot:ClientId"}]}`, `statement 1: Resource "topic/${iot:ClientId": unclosed ${ at offset 6`},
		{st + `{"Effect":"Allow","Action":"iot:*","Resource":"topic/${}"}]}`, `statement 1: Resource "topic/${}": empty variable ${} at offset 6`},
	} {
		_, err := ParsePolicy("p", []byte(c.doc))
		if err == nil || err.Error() != c.want {
			t.Errorf("%s:\n got %v\nwant %s", c.doc, err, c.want)
		}
	}
	// A document held in a JSON string, as templates may write it, parses.
	if _, err := ParsePolicy("s", []byte(`"{\"Version\":\"2012-10-17\",\"Statement\":{\"Effect\":\"Allow\",\"Action\":\"iot:*\",\"Resource\":\"*\"}}"`)); err != nil {
		t.Errorf("policy in a string: %v", err)
	}
}

// A malformed policy file stops Open, naming the file and the problem.
func TestOpenRejectsMalformedPolicy(t *testing.T) {
	dir := initDir(t)
	path := filepath.Join(dir, "policies", "Broken.json")
	if err := os.WriteFile(path, []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Resource":"*"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Options{Dir: dir})
	if err == nil || err.Error() != path+": invalid policy: statement 1: no Action" {
		t.Errorf("Open: %v", err)
	}
}

func TestClaimPolicyMustExist(t *testing.T) {
	dir := initDir(t)
	_, err := Open(Options{Dir: dir, ClaimPolicies: []string{"Nope"}})
	want := filepath.Join(dir, "cloud.json") + `: claim policy "Nope": unknown policy: no file ` + filepath.Join(dir, "policies", "Nope.json")
	if !errors.Is(err, ErrPolicy) || err.Error() != want {
		t.Errorf("Open: %v\nwant %s", err, want)
	}
	err = Init(InitOptions{Dir: t.TempDir(), Listen: "127.0.0.1:18886", ClaimPolicies: []string{"Nope"}})
	if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), `claim policy "Nope": unknown policy; init writes CreateKeysClaimPolicy, GreengrassProvisioningClaimPolicy,`) {
		t.Errorf("Init: %v", err)
	}
}

// cloud.json records the claim's policies; Open puts them on the claim in
// the registry, so inspection shows what is enforced.
func TestClaimPoliciesRecorded(t *testing.T) {
	dir := t.TempDir()
	if err := Init(InitOptions{Dir: dir, Listen: "127.0.0.1:18887", ClaimPolicies: []string{claimPolicyName, createKeysClaimPolicyName}}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "cloud.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"claimPolicies": [
    "GreengrassProvisioningClaimPolicy",
    "CreateKeysClaimPolicy"
  ]`) {
		t.Errorf("cloud.json does not record the claim policies:\n%s", b)
	}
	addr, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Open(Options{Dir: dir, Listen: addr, ClaimPolicies: []string{createKeysClaimPolicyName}})
	if err != nil {
		t.Fatal(err)
	}
	// The registry on disk changes once the emulator serves the directory.
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	_ = srv.Close()
	reg, err := ReadRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range reg.Certificates {
		if c.Claim && strings.Join(c.Policies, ",") != createKeysClaimPolicyName {
			t.Errorf("claim has policies %v after serving with ClaimPolicies, want [%s]", c.Policies, createKeysClaimPolicyName)
		}
	}
}
