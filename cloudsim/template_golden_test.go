package cloudsim

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/templates/*.golden.json from what the emulator does (review the diff!)")

// permissive lets every client do anything, so template tests can use any
// template name without writing a claim policy for each: what is tested
// here is the template, not the policy.
type permissive struct{}

func (permissive) Authorize(Principal, Action, string) bool { return true }

// Golden files for provisioning templates: for every testdata/templates/NAME.json
// (the reference templates verbatim, and our own), NAME.params.json holds
// the RegisterThing parameters ("<csr>" stands for a CSR of the device's
// key), NAME.existing.json optionally a thing already in the registry, and
// NAME.golden.json what a device hears and what the registry then holds.
// The certificate id is written as <certificateId>.
//
// Run with -update to rewrite the goldens; every golden was then checked
// by hand against the AWS semantics (docs/cloud-emulator.md, Templates).
func TestTemplateGoldens(t *testing.T) {
	names := templateFixtures(t)
	if len(names) < 10 {
		t.Fatalf("only %d templates in testdata/templates", len(names))
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			got := runGolden(t, name)
			path := filepath.Join("testdata", "templates", name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestTemplateGoldens -update and review the file)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", path, got, want)
			}
		})
	}
}

// templateFixtures lists the template names in testdata/templates: files
// NAME.json whose NAME has no dot (the side files do).
func templateFixtures(t *testing.T) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "templates", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".json")
		if !strings.Contains(name, ".") {
			names = append(names, name)
		}
	}
	return names
}

// fixturePolicies copies the policies the fixtures name into an emulator
// directory.
func fixturePolicies(t *testing.T, dir string) {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join("testdata", "templates", "policies", "*.json"))
	for _, p := range paths {
		copyFile(t, p, filepath.Join(dir, dirPolicies, filepath.Base(p)))
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func runGolden(t *testing.T, name string) []byte {
	t.Helper()
	fixture := func(suffix string) string { return filepath.Join("testdata", "templates", name+suffix) }
	dir := initDir(t)
	copyFile(t, fixture(".json"), filepath.Join(dir, dirTemplates, name+".json"))
	fixturePolicies(t, dir)
	if b, err := os.ReadFile(fixture(".existing.json")); err == nil {
		var thing Thing
		if err := json.Unmarshal(b, &thing); err != nil {
			t.Fatalf("%s: %v", fixture(".existing.json"), err)
		}
		reg, err := ReadRegistry(dir)
		if err != nil {
			t.Fatal(err)
		}
		reg.Things[thing.Name] = &thing
		if err := compact(dir, reg); err != nil {
			t.Fatal(err)
		}
	}
	var params map[string]string
	b, err := os.ReadFile(fixture(".params.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &params); err != nil {
		t.Fatalf("%s: %v", fixture(".params.json"), err)
	}

	e := startEnv(t, Options{Dir: dir, Authorizer: permissive{}})
	c := e.dialClaim(t)
	p := createCert(t, c)
	for k, v := range params {
		if v == "<csr>" {
			params[k] = csrPEM(t, p.key)
		}
	}
	res, body := c.call("$aws/provisioning-templates/"+name+"/provision/json",
		map[string]any{"certificateOwnershipToken": p.token, "parameters": params})
	out := map[string]any{res: body}
	if res == "accepted" {
		reg, err := ReadRegistry(dir)
		if err != nil {
			t.Fatal(err)
		}
		cert := reg.Certificates[p.certID]
		out["certificate"] = map[string]any{
			"status": cert.Status, "thingName": cert.ThingName, "thingPrincipalType": cert.ThingPrincipalType, "policies": cert.Policies,
		}
		if th, ok := reg.Things[cert.ThingName]; ok {
			out["thing"] = th
		}
		inline := map[string]json.RawMessage{}
		for _, pol := range cert.Policies {
			if doc, ok := reg.Policies[pol]; ok {
				inline[pol] = doc
			}
		}
		out["inlinePolicies"] = inline
	}
	j, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	j = bytes.ReplaceAll(j, []byte(p.certID), []byte("<certificateId>"))
	// createdAt is the wall clock for a new thing; the golden keeps it
	// stable.
	var norm map[string]any
	_ = json.Unmarshal(j, &norm)
	if th, ok := norm["thing"].(map[string]any); ok {
		if th["createdAt"] != "2024-01-01T00:00:00Z" {
			th["createdAt"] = "<now>"
		}
	}
	// Unescaped, so <certificateId> reads as written.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(norm); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Every template AWS or its SDKs publish (copied verbatim into
// testdata/templates) must load and provision: the requirement.
func TestReferenceTemplatesHaveGoldens(t *testing.T) {
	want := []string{
		"docs-fleet-provisioning-example", // docs-template-fleet-provisioning-example.json: 39 characters is over the name limit
		"docs-template-resources-snippet",
		"docs-template-with-hook-example",
		"embeddedc-demo-template",
		"greengrass-lite-cfn-template-body",
		"sdk-python-sample-template",
	}
	have := templateFixtures(t)
	for _, name := range want {
		if !slices.Contains(have, name) {
			t.Errorf("testdata/templates/%s.json is missing", name)
			continue
		}
		b, err := os.ReadFile(filepath.Join("testdata", "templates", name+".golden.json"))
		if err != nil || !bytes.Contains(b, []byte(`"accepted"`)) {
			t.Errorf("%s: the golden must show the template provisioning (accepted): %v", name, err)
		}
	}
}
