package cloudsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// script writes an executable shell script into dir and returns its path.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("hook scripts are POSIX shell")
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseTemplateSettings(t *testing.T) {
	dir := t.TempDir()
	script(t, dir, "hook.sh", "cat")
	if err := os.WriteFile(filepath.Join(dir, "plain.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := []struct {
		yaml string
		want TemplateSettings
	}{
		{"", TemplateSettings{Enabled: true}},
		{"# nothing set\n", TemplateSettings{Enabled: true}},
		{"enabled: false\n", TemplateSettings{Enabled: false}},
		{"preProvisioningHook:\n  command: [./hook.sh, --strict]\n", TemplateSettings{Enabled: true, Hook: &HookSettings{
			Command: []string{filepath.Join(dir, "hook.sh"), "--strict"}, PayloadVersion: "2020-04-01", Timeout: 5 * time.Second, dir: dir}}},
		{"enabled: true\npreProvisioningHook: {url: \"http://127.0.0.1:9/hook\", payloadVersion: \"2020-04-01\", timeout: 250ms}\n", TemplateSettings{Enabled: true, Hook: &HookSettings{
			URL: "http://127.0.0.1:9/hook", PayloadVersion: "2020-04-01", Timeout: 250 * time.Millisecond, dir: dir}}},
		{"preProvisioningHook:\n  command: [sh, -c, 'echo {}']\n  timeout: 5s\n", TemplateSettings{Enabled: true, Hook: &HookSettings{
			Command: []string{mustLookPath(t, "sh"), "-c", "echo {}"}, PayloadVersion: "2020-04-01", Timeout: 5 * time.Second, dir: dir}}},
	}
	for _, tt := range good {
		got, err := ParseTemplateSettings([]byte(tt.yaml), dir)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q:\n got %+v %+v, %v\nwant %+v %+v", tt.yaml, got, got.Hook, err, tt.want, tt.want.Hook)
		}
	}
	bad := map[string]string{
		"enable: false\n":           "not valid settings YAML: yaml: unmarshal errors:\n  line 1: field enable not found in type cloudsim.rawSettings",
		"enabled: maybe\n":          "not valid settings YAML: yaml: unmarshal errors:\n  line 1: cannot unmarshal !!str `maybe` into bool",
		"preprovisioningHook: {}\n": "not valid settings YAML: yaml: unmarshal errors:\n  line 1: field preprovisioningHook not found in type cloudsim.rawSettings",
		"preProvisioningHook: {}\n": "preProvisioningHook: give command: [program, args...] or url: http://...",
		"preProvisioningHook:\n  command: [./hook.sh]\n  url: http://h/\n":            "preProvisioningHook: give command or url, not both",
		"preProvisioningHook: {url: ftp://h/x}\n":                                     `preProvisioningHook.url: "ftp://h/x" is not an http:// or https:// URL`,
		"preProvisioningHook: {url: 'http://'}\n":                                     `preProvisioningHook.url: "http://" is not an http:// or https:// URL`,
		"preProvisioningHook: {command: [./missing.sh]}\n":                            "preProvisioningHook.command: ./missing.sh: stat " + filepath.Join(dir, "missing.sh") + ": no such file or directory",
		"preProvisioningHook: {command: [./plain.txt]}\n":                             "preProvisioningHook.command: " + filepath.Join(dir, "plain.txt") + " is not an executable file",
		"preProvisioningHook: {command: [no-such-hook-program]}\n":                    "preProvisioningHook.command: no-such-hook-program not found on PATH",
		"preProvisioningHook: {command: ['']}\n":                                      "preProvisioningHook.command: the program name is empty",
		"preProvisioningHook: {command: [./hook.sh], timeout: 6s}\n":                  `preProvisioningHook.timeout: "6s"; use a duration from 1ms to 5s, e.g. 2s (AWS allows its hook 5 s)`,
		"preProvisioningHook: {command: [./hook.sh], timeout: 5}\n":                   `preProvisioningHook.timeout: "5"; use a duration from 1ms to 5s, e.g. 2s (AWS allows its hook 5 s)`,
		"preProvisioningHook: {command: [./hook.sh], timeout: -1s}\n":                 `preProvisioningHook.timeout: "-1s"; use a duration from 1ms to 5s, e.g. 2s (AWS allows its hook 5 s)`,
		"preProvisioningHook: {command: [./hook.sh], payloadVersion: '2019-01-01'}\n": `preProvisioningHook.payloadVersion: "2019-01-01"; the only version is 2020-04-01`,
	}
	for yaml, want := range bad {
		_, err := ParseTemplateSettings([]byte(yaml), dir)
		if err == nil || err.Error() != want {
			t.Errorf("%q:\n got %v\nwant %s", yaml, err, want)
		}
	}
}

func mustLookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skip(err)
	}
	return p
}

// A broken settings file stops the emulator at start, naming the file.
func TestOpenRejectsBrokenSettings(t *testing.T) {
	dir := initDir(t)
	path := filepath.Join(dir, dirTemplates, DefaultTemplateName+".yaml")
	if err := os.WriteFile(path, []byte("preProvisioningHook: {url: nowhere}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Options{Dir: dir})
	want := path + `: preProvisioningHook.url: "nowhere" is not an http:// or https:// URL`
	if err == nil || err.Error() != want {
		t.Errorf("Open: %v\nwant %s", err, want)
	}
}

// The hook's own outcomes, as the emulator classifies them.
func TestHookCall(t *testing.T) {
	dir := t.TempDir()
	in := hookInput{ClientID: "c1", Parameters: map[string]string{"SerialNumber": "1"}}
	tests := []struct {
		name, body string
		timeout    time.Duration
		want       map[string]string
		wantErr    error  // errors.Is
		wantMsg    string // substring
	}{
		{"allow", `echo '{"allowProvisioning": true}'`, time.Second, nil, nil, ""},
		{"allow with overrides", `echo '{"allowProvisioning": true, "parameterOverrides": {"ThingName": "x"}}'`, time.Second, map[string]string{"ThingName": "x"}, nil, ""},
		{"reads its input", `grep -q '"clientId":"c1"' && echo '{"allowProvisioning": true}'`, time.Second, nil, nil, ""},
		{"deny", `echo '{"allowProvisioning": false}'`, time.Second, nil, errHookDenied, "allowProvisioning is false"},
		{"no allowProvisioning", `echo '{"parameterOverrides": {}}'`, time.Second, nil, errHookDenied, "allowProvisioning is missing"},
		{"null answer", `echo null`, time.Second, nil, errHookDenied, "allowProvisioning is missing"},
		{"allowProvisioning a string", `echo '{"allowProvisioning": "true"}'`, time.Second, nil, errHookAnswer, "cannot unmarshal string"},
		{"override not a string", `echo '{"allowProvisioning": true, "parameterOverrides": {"N": 1}}'`, time.Second, nil, errHookAnswer, "cannot unmarshal number"},
		{"not JSON", `echo allow`, time.Second, nil, errHookAnswer, "invalid character"},
		{"no output", `true`, time.Second, nil, errHookAnswer, "unexpected end of JSON input"},
		{"exit 1", `echo '{"allowProvisioning": true}'; echo 'serial refused' >&2; exit 1`, time.Second, nil, nil, "exit status 1: serial refused"},
		{"sleeps past the timeout", `sleep 10; echo '{"allowProvisioning": true}'`, 200 * time.Millisecond, nil, errHookTimeout, "did not answer in time (200ms)"},
		{"child keeps the pipe open", `(sleep 10; echo late) & echo '{"allowProvisioning": true}'; wait`, 200 * time.Millisecond, nil, errHookTimeout, ""},
		{"huge answer", `head -c 2000000 /dev/zero | tr '\0' ' '`, 2 * time.Second, nil, errHookAnswer, "more than 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &HookSettings{Command: []string{script(t, dir, strings.ReplaceAll(tt.name, " ", "_")+".sh", tt.body)}, Timeout: tt.timeout, dir: dir}
			ctx, cancel := context.WithTimeoutCause(context.Background(), h.Timeout, errHookTimeout)
			defer cancel()
			start := time.Now()
			got, err := h.call(ctx, in)
			if took := time.Since(start); took > tt.timeout+time.Second {
				t.Errorf("took %s with a %s timeout", took, tt.timeout)
			}
			if tt.wantErr == nil && tt.wantMsg == "" {
				if err != nil || !reflect.DeepEqual(got, tt.want) {
					t.Errorf("got %v, %v; want %v", got, err, tt.want)
				}
				return
			}
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %v; want %v containing %q", err, tt.wantErr, tt.wantMsg)
			}
		})
	}
}

// hookTemplate names the thing after ThingName (so an override shows) and
// keeps Prefix's default (so the order overrides-then-defaults shows).
const hookTemplate = `{
  "Parameters": {"ThingName": {"Type": "String"}, "Prefix": {"Type": "String", "Default": "dflt"}},
  "Resources": {
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}},
    "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}}}
  },
  "DeviceConfiguration": {"prefix": {"Ref": "Prefix"}, "certificate": {"Ref": "AWS::IoT::Certificate::Id"}}
}`

func startHookEnv(t *testing.T, settings string) *env {
	t.Helper()
	dir := initDir(t)
	for name, body := range map[string]string{"Hooked.json": hookTemplate, "Hooked.yaml": settings} {
		if err := os.WriteFile(filepath.Join(dir, dirTemplates, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return startEnv(t, Options{Dir: dir, Authorizer: permissive{}})
}

const hookedTopic = "$aws/provisioning-templates/Hooked/provision/json"

// A URL hook gets the Lambda's input as a POST and its parameterOverrides
// win over the device's parameters, before defaults are applied.
func TestHookURL(t *testing.T) {
	var mu sync.Mutex
	var got []map[string]any
	var contentType string
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var in map[string]any
		_ = json.Unmarshal(b, &in)
		mu.Lock()
		got = append(got, in)
		contentType = r.Header.Get("Content-Type")
		mu.Unlock()
		// Overriding the certificate id must not work; Prefix is left to
		// its default; ThingName is replaced.
		fmt.Fprint(w, `{"allowProvisioning": true, "parameterOverrides": {"ThingName": "from-hook", "AWS::IoT::Certificate::Id": "forged"}}`)
	}))
	defer hs.Close()
	e := startHookEnv(t, "preProvisioningHook:\n  url: "+hs.URL+"/hook\n  payloadVersion: \"2020-04-01\"\n")
	cl := e.dialClaim(t)
	p := createCert(t, cl)
	res, body := cl.call(hookedTopic, map[string]any{"certificateOwnershipToken": p.token, "parameters": map[string]string{"ThingName": "from-device"}})
	if res != "accepted" || body["thingName"] != "from-hook" {
		t.Fatalf("%s %v", res, body)
	}
	dc := body["deviceConfiguration"].(map[string]any)
	if dc["prefix"] != "dflt" || dc["certificate"] != p.certID {
		t.Errorf("deviceConfiguration %v", dc)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || contentType != "application/json" {
		t.Fatalf("hook called %d times, Content-Type %q", len(got), contentType)
	}
	in := got[0]
	claim := e.claimCert(t)
	wantKeys := []string{"certificateId", "certificatePem", "claimCertificateId", "clientId", "parameters", "templateArn"}
	if !reflect.DeepEqual(keysOf(in), wantKeys) {
		t.Errorf("input keys %v, want %v (docs-pre-provisioning-hook-input)", keysOf(in), wantKeys)
	}
	if in["claimCertificateId"] != CertificateID(claim.Certificate[0]) || in["certificateId"] != p.certID || in["certificatePem"] != p.certPEM ||
		in["templateArn"] != "arn:aws:iot:us-east-1:123456789012:provisioningtemplate/Hooked" || !strings.HasPrefix(in["clientId"].(string), "") ||
		!reflect.DeepEqual(in["parameters"], map[string]any{"ThingName": "from-device"}) {
		t.Errorf("hook input %v", in)
	}
	if id, _ := in["clientId"].(string); id == "" {
		t.Errorf("clientId is empty")
	}

	// The repeat of a used token answers from the registry: no second
	// hook call, same thing.
	res, body = cl.call(hookedTopic, map[string]any{"certificateOwnershipToken": p.token, "parameters": map[string]string{"ThingName": "other"}})
	if res != "accepted" || body["thingName"] != "from-hook" || len(got) != 1 {
		t.Errorf("repeat: %s %v, hook calls %d", res, body, len(got))
	}
}

// Every way a hook can fail gives the device the same access-denied
// rejection, and leaves its token usable.
func TestHookDenialsOnTheWire(t *testing.T) {
	dir := t.TempDir()
	denied := map[string]any{"statusCode": float64(403), "errorCode": "AccessDeniedException",
		"errorMessage": "Access denied: the pre-provisioning hook of template Hooked did not allow provisioning."}
	tests := []struct{ name, settings string }{
		{"false", "preProvisioningHook: {command: [" + script(t, dir, "deny.sh", `echo '{"allowProvisioning": false}'`) + "]}"},
		{"exit 2", "preProvisioningHook: {command: [" + script(t, dir, "fail.sh", `exit 2`) + "]}"},
		{"bad JSON", "preProvisioningHook: {command: [" + script(t, dir, "junk.sh", `echo '{allow'`) + "]}"},
		{"URL answers 500", "preProvisioningHook: {url: URL500}"},
		{"URL unreachable", "preProvisioningHook: {url: 'http://127.0.0.1:1/hook'}"},
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "lambda threw", http.StatusInternalServerError)
	}))
	defer hs.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startHookEnv(t, strings.ReplaceAll(tt.settings, "URL500", hs.URL))
			cl := e.dialClaim(t)
			p := createCert(t, cl)
			res, body := cl.call(hookedTopic, map[string]any{"certificateOwnershipToken": p.token, "parameters": map[string]string{"ThingName": "t"}})
			if res != "rejected" || !reflect.DeepEqual(body, denied) {
				t.Errorf("got %s %v\nwant rejected %v", res, body, denied)
			}
			reg, _ := ReadRegistry(e.dir)
			if len(reg.Things) != 0 || reg.Tokens[p.token].UsedAt != nil {
				t.Errorf("a denied request changed the registry")
			}
		})
	}
}

// A hook that sleeps past its timeout is denied after about the timeout,
// not when it finishes; and so is one whose children hold its output open.
func TestHookTimeoutDenies(t *testing.T) {
	dir := t.TempDir()
	slow := script(t, dir, "slow.sh", `sleep 30 & sleep 30; echo '{"allowProvisioning": true}'`)
	e := startHookEnv(t, "preProvisioningHook:\n  command: ["+slow+"]\n  timeout: 300ms\n")
	cl := e.dialClaim(t)
	p := createCert(t, cl)
	start := time.Now()
	res, body := cl.call(hookedTopic, map[string]any{"certificateOwnershipToken": p.token, "parameters": map[string]string{"ThingName": "t"}})
	took := time.Since(start)
	if res != "rejected" || body["statusCode"] != float64(403) || body["errorCode"] != CodeAccessDenied {
		t.Errorf("%s %v", res, body)
	}
	if took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("answered after %s; want about the 300ms timeout", took)
	}
}

// Closing the emulator does not wait out a running hook.
func TestCloseDuringHook(t *testing.T) {
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	slow := script(t, dir, "slow.sh", `touch `+started+`; sleep 30`)
	e := startHookEnv(t, "preProvisioningHook: {command: ["+slow+"], timeout: 5s}\n")
	cl := e.dialClaim(t)
	p := createCert(t, cl)
	go func() {
		_, _, _ = cl.callWait(hookedTopic, map[string]any{"certificateOwnershipToken": p.token, "parameters": map[string]string{"ThingName": "t"}}, 10*time.Second)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("hook never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	_ = e.srv.Close()
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %s with a hook running", took)
	}
}

// The example hook, built from examples/hooks/mac-validator, run by the
// emulator for Greengrass's own template and claim policy: the sample
// SerialNumber is a MAC address and provisions; anything else is denied.
func TestMacValidatorHook(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "mac-validator")
	build := exec.Command(goBin, "build", "-o", bin, "github.com/fleetprov/fleetprov/examples/hooks/mac-validator")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := initDir(t)
	settings := "enabled: true\npreProvisioningHook:\n  command: [" + bin + "]\n  timeout: 5s\n"
	if err := os.WriteFile(filepath.Join(dir, dirTemplates, DefaultTemplateName+".yaml"), []byte(settings), 0o644); err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, Options{Dir: dir})
	cl := e.dialClaim(t)

	p := createCert(t, cl)
	register(t, cl, &p, sampleSerialNumber)
	if p.thingName != "gg_a2_b9_d2_5a_fd_f9" {
		t.Errorf("thing %q", p.thingName)
	}

	q := createCert(t, cl)
	res, body := cl.call(topicRegister, map[string]any{"certificateOwnershipToken": q.token, "parameters": map[string]string{"SerialNumber": "not-a-mac"}})
	want := map[string]any{"statusCode": float64(403), "errorCode": "AccessDeniedException",
		"errorMessage": "Access denied: the pre-provisioning hook of template GreengrassFleetProvisioningTemplate did not allow provisioning."}
	if res != "rejected" || !reflect.DeepEqual(body, want) {
		t.Errorf("not-a-mac: %s %v", res, body)
	}
	reg, _ := ReadRegistry(dir)
	if _, ok := reg.Things["gg_not-a-mac"]; ok || len(reg.Things) != 1 {
		t.Errorf("things after the denial: %v", keysOfThings(reg))
	}
}

func keysOfThings(r *Registry) []string {
	var out []string
	for k := range r.Things {
		out = append(out, k)
	}
	return out
}
