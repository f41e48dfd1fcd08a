package cloudsim

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzPolicy evaluates arbitrary policy documents against arbitrary
// requests: go test -fuzz FuzzPolicy ./cloudsim. The seeds in
// testdata/fuzz/FuzzPolicy (the claim and device policies of the AWS
// docs, the SDK demos and Greengrass lite, with the topics they guard)
// run as a normal test.
//
// What must hold, for any two documents and any request:
//   - evaluation is deterministic and does not depend on the order of the
//     policies attached;
//   - the outcome for both policies is the combination of each alone: an
//     explicit Deny in either wins, else an Allow in either allows;
//   - a Deny of everything denies every request, whatever else is
//     attached, and an Allow of everything allows every request that
//     nothing denies;
//   - a literal resource (no wildcard, no variable) grants exactly
//     itself, and a resource made of a prefix and ${iot:ClientId}
//     grants exactly the prefix and the client id, with no wildcard
//     power in the client id.
func FuzzPolicy(f *testing.F) {
	denyAll := mustPolicy(f, `{"Version": "2012-10-17", "Statement": {"Effect": "Deny", "Action": "*", "Resource": "*"}}`)
	allowAll := mustPolicy(f, `{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}`)
	f.Fuzz(func(t *testing.T, doc1, doc2 []byte, action, resource, clientID, thingName string) {
		p := Principal{ClientID: clientID, ThingName: thingName, ThingAttributes: map[string]string{"Serial": thingName}}
		act := Action(action)
		var pols []*Policy
		for _, doc := range [][]byte{doc1, doc2} {
			if pol, err := ParsePolicy("P", doc); err == nil {
				pols = append(pols, pol)
			} else if err.Error() == "" || strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("parse error is not one line: %q", err)
			}
		}
		all := Evaluate(pols, p, act, resource)
		if again := Evaluate(pols, p, act, resource); again != all {
			t.Fatalf("evaluated twice: %v then %v", all, again)
		}
		want := NoMatch
		for _, pol := range pols {
			switch Evaluate([]*Policy{pol}, p, act, resource) {
			case Denied:
				want = Denied
			case Allowed:
				if want != Denied {
					want = Allowed
				}
			}
		}
		if all != want {
			t.Fatalf("the policies together give %v, each alone combines to %v", all, want)
		}
		if len(pols) == 2 {
			if rev := Evaluate([]*Policy{pols[1], pols[0]}, p, act, resource); rev != all {
				t.Fatalf("order matters: %v one way, %v the other", all, rev)
			}
		}
		if got := Evaluate(append(pols[:len(pols):len(pols)], denyAll), p, act, resource); got != Denied {
			t.Fatalf("with a Deny of everything attached: %v", got)
		}
		withAllow := Evaluate(append(pols[:len(pols):len(pols)], allowAll), p, act, resource)
		if (all == Denied) != (withAllow == Denied) || (withAllow != Denied && withAllow != Allowed) {
			t.Fatalf("an Allow of everything turned %v into %v", all, withAllow)
		}

		// Resources built from the fuzzed resource itself. Documents are
		// JSON, so what a policy can hold is valid UTF-8.
		if !utf8.ValidString(resource) || resource == "" {
			return
		}
		lit, err := json.Marshal(resource)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.ContainsAny(resource, "*?$") {
			pol := mustPolicy(t, `{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "iot:Publish", "Resource": `+string(lit)+`}}`)
			if got := Evaluate([]*Policy{pol}, p, ActionPublish, resource); got != Allowed {
				t.Fatalf("Resource %s does not allow itself: %v", lit, got)
			}
			for _, other := range []string{resource + "x", resource[:len(resource)-1], strings.ToUpper(resource), strings.ToLower(resource)} {
				if other == resource {
					continue
				}
				if got := Evaluate([]*Policy{pol}, p, ActionPublish, other); got != NoMatch {
					t.Fatalf("Resource %s gives %v for %q", lit, got, other)
				}
			}
		}
		if !strings.ContainsAny(resource, "*?$") {
			pol := mustPolicy(t, `{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "iot:Publish", "Resource": `+
				strings.TrimSuffix(string(lit), `"`)+`${iot:ClientId}"}}`)
			for _, req := range []string{resource + clientID, resource + "abc", resource} {
				got := Evaluate([]*Policy{pol}, p, ActionPublish, req)
				if want := clientID != "" && req == resource+clientID; (got == Allowed) != want {
					t.Fatalf("Resource %s${iot:ClientId} with client id %q gives %v for %q", lit, clientID, got, req)
				}
			}
		}
	})
}

func mustPolicy(tb testing.TB, doc string) *Policy {
	tb.Helper()
	p, err := ParsePolicy("P", []byte(doc))
	if err != nil {
		tb.Fatalf("%s: %v", doc, err)
	}
	return p
}

// FuzzEvaluateTemplate evaluates templates with arbitrary parameters: go
// test -fuzz FuzzEvaluateTemplate ./cloudsim. The seeds in
// testdata/fuzz/FuzzEvaluateTemplate (every template of
// testdata/templates with the parameters of its golden test) run as a
// normal test. FuzzParseTemplate covers loading alone.
//
// What must hold for a template that loads and any parameters (a JSON
// object of strings, as RegisterThing carries them):
//   - Evaluate refuses only with a *ParameterError (what the device reads
//     in errorMessage), one line;
//   - evaluating twice gives the same result, and does not change the
//     template;
//   - what an evaluation accepts is what AWS would create: a thing name,
//     attributes, groups and type within AWS's rules, a certificate status
//     of ACTIVE or INACTIVE, inline policies that are JSON objects.
func FuzzEvaluateTemplate(f *testing.F) {
	pseudo := map[string]string{"AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012"}
	f.Fuzz(func(t *testing.T, body, paramsJSON []byte) {
		tmpl, err := ParseTemplate("Fuzz", body)
		if err != nil {
			return
		}
		var params map[string]string
		if json.Unmarshal(paramsJSON, &params) != nil {
			return
		}
		if params == nil {
			params = map[string]string{}
		}
		if _, ok := params[ParamCertificateID]; !ok {
			params[ParamCertificateID] = testCertID
		}
		if CheckParameterLimits(params) != nil {
			return
		}
		before := snapshotTemplate(t, tmpl)
		ev, err := tmpl.Evaluate(params, pseudo)
		ev2, err2 := tmpl.Evaluate(params, pseudo)
		if !reflect.DeepEqual(ev, ev2) || errString(err) != errString(err2) {
			t.Fatalf("evaluated twice: %+v, %v then %+v, %v", ev, err, ev2, err2)
		}
		if after := snapshotTemplate(t, tmpl); after != before {
			t.Fatalf("Evaluate changed the template:\nbefore %s\nafter  %s", before, after)
		}
		if err != nil {
			var pe *ParameterError
			if !errors.As(err, &pe) {
				t.Fatalf("Evaluate error %q is a %T, not a *ParameterError", err, err)
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("Evaluate error is not one line: %q", err)
			}
			return
		}
		if th := ev.Thing; th != nil {
			if !validThingName(th.Name) {
				t.Fatalf("thing name %q accepted", th.Name)
			}
			for k, v := range th.Attributes {
				if len(k) > maxAttrName || !attrNameRE.MatchString(k) || len(v) > maxAttrValue || !attrValueRE.MatchString(v) {
					t.Fatalf("attribute %q = %q accepted", k, v)
				}
			}
			for _, g := range th.Groups {
				if !validResourceName(g) {
					t.Fatalf("thing group %q accepted", g)
				}
			}
			if th.ThingTypeName != "" && !validResourceName(th.ThingTypeName) {
				t.Fatalf("thing type %q accepted", th.ThingTypeName)
			}
			if th.BillingGroup != "" && !validResourceName(th.BillingGroup) {
				t.Fatalf("billing group %q accepted", th.BillingGroup)
			}
		}
		if c := ev.Certificate; c != nil {
			if c.Status != StatusActive && c.Status != StatusInactive {
				t.Fatalf("certificate status %q accepted", c.Status)
			}
			if c.PrincipalType != PrincipalExclusive && c.PrincipalType != PrincipalNonExclusive {
				t.Fatalf("thing principal type %q accepted", c.PrincipalType)
			}
		}
		for _, p := range ev.Policies {
			if !validPolicyName(p.Name) {
				t.Fatalf("policy name %q accepted", p.Name)
			}
			if p.Document != nil {
				var doc map[string]any
				if err := json.Unmarshal(p.Document, &doc); err != nil || doc == nil {
					t.Fatalf("inline policy %s is not a JSON object: %v", p.Document, err)
				}
			}
		}
	})
}

// snapshotTemplate renders what a template holds, to tell whether
// evaluation changed it.
func snapshotTemplate(t *testing.T, tmpl *Template) string {
	t.Helper()
	type res struct {
		ID, Type  string
		Props     map[string]any
		Overrides map[string]string
	}
	var rs []res
	for _, r := range tmpl.resources {
		rs = append(rs, res{r.logicalID, r.typ, r.props, r.overrides})
	}
	b, err := json.Marshal(struct {
		Params     map[string]paramDecl
		Mappings   map[string]any
		Resources  []res
		DeviceConf map[string]any
		Required   []string
	}{tmpl.params, tmpl.mappings, rs, tmpl.deviceConf, tmpl.required})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
