package cloudsim

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkTemplateEvaluate is RegisterThing's template work for one
// device: Greengrass lite's own template, with its parameters.
func BenchmarkTemplateEvaluate(b *testing.B) {
	tmpl, err := ParseTemplate(DefaultTemplateName, greengrassTemplate)
	if err != nil {
		b.Fatal(err)
	}
	pseudo := map[string]string{"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}
	for b.Loop() {
		params := map[string]string{"SerialNumber": "a2_b9_d2_5a_fd_f9", ParamCertificateID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
		if _, err := tmpl.Evaluate(params, pseudo); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPolicyEvaluate is one authorization decision of the kinds every
// packet of a provisioning device needs: the claim policy on its CONNECT,
// its request publish and its answer subscription.
func BenchmarkPolicyEvaluate(b *testing.B) {
	// The claim policy as `cloud init` writes it, with its region,
	// account and template filled in.
	dir := b.TempDir()
	if err := Init(InitOptions{Dir: dir, Listen: "127.0.0.1:1"}); err != nil {
		b.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(dir, dirPolicies, claimPolicyName+".json"))
	if err != nil {
		b.Fatal(err)
	}
	claim, err := ParsePolicy(claimPolicyName, doc)
	if err != nil {
		b.Fatal(err)
	}
	p := Principal{CertificateID: "claim", Claim: true, Status: StatusActive, ClientID: "4341349e-bc7f-4555-89d0-c41ff639a239", Policies: []*Policy{claim}}
	cases := []struct {
		name     string
		action   Action
		resource string
	}{
		{"connect", ActionConnect, p.ClientID},
		{"publish", ActionPublish, "$aws/provisioning-templates/GreengrassFleetProvisioningTemplate/provision/json"},
		{"subscribe", ActionSubscribe, "$aws/certificates/create-from-csr/json/accepted"},
	}
	for _, c := range cases {
		arn := ResourceARN(defaultRegion, defaultAccountID, c.action, c.resource)
		if got := Evaluate(p.Policies, p, c.action, arn); got != Allowed {
			b.Fatalf("%s %s: %v, want allowed", c.action, c.resource, got)
		}
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				Evaluate(p.Policies, p, c.action, arn)
			}
		})
	}
}
