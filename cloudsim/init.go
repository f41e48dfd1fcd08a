package cloudsim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/fleetprov/fleetprov/atomicfile"
)

// Files in an emulator directory.
const (
	fileCA           = "ca.pem"
	fileCAKey        = "ca.key"
	fileRootCA       = "AmazonRootCA1.pem"
	fileServerCert   = "server.pem.crt"
	fileServerKey    = "server.pem.key"
	fileClaimCert    = "claim.pem.crt"
	fileClaimKey     = "claim.pem.key"
	fileSettings     = "cloud.json"
	fileRegistry     = "registry.cbor"
	fileRegistryJSON = "registry.json" // the snapshot's name and format before registry.cbor
	fileDeviceConfig = "config.yaml"
	dirTemplates     = "templates"
	dirPolicies      = "policies"
	dirDevice        = "device"
)

// Defaults of a new emulator directory. The region and account are fake but
// well-formed, so ARNs in policies look like the real ones.
const (
	DefaultListen        = "127.0.0.1:8883"
	DefaultTemplateName  = "GreengrassFleetProvisioningTemplate"
	DefaultTokenLifetime = time.Hour
	defaultRegion        = "us-east-1"
	defaultAccountID     = "123456789012"
	defaultStackName     = "GreengrassFleetProvisioning"
	claimPolicyName      = "GreengrassProvisioningClaimPolicy"
	// The AWS docs' sample claim policy, for CreateKeysAndCertificate.
	createKeysClaimPolicyName = "CreateKeysClaimPolicy"
	sampleSerialNumber        = "a2_b9_d2_5a_fd_f9"
	iotRoleAlias              = "GreengrassV2TokenExchangeRoleAlias-GreengrassFleetProvisioning"
)

// The Greengrass nucleus lite CloudFormation snippets, verbatim, so the
// emulator serves exactly what a Greengrass user deploys to AWS.
var (
	//go:embed embedded/greengrass-lite-cfn-template-body.json
	greengrassTemplate []byte
	//go:embed embedded/greengrass-lite-cfn-claim-policy.json
	greengrassClaimPolicy []byte
	//go:embed embedded/docs-claim-policy-create-keys.json
	docsCreateKeysClaimPolicy []byte
	//go:embed embedded/greengrass-lite-cfn-device-policies.json
	greengrassDevicePolicies []byte
)

// Errors a caller may want to tell apart: they are the user's to fix.
var (
	ErrInitialised    = errors.New("already an emulator directory")
	ErrNotInitialised = errors.New("not an emulator directory")
	ErrListen         = errors.New("invalid listen address")
	ErrPolicy         = errors.New("unknown policy")
)

// InitOptions configure a new emulator directory.
type InitOptions struct {
	Dir    string
	Listen string // host:port; default 127.0.0.1:8883
	// ClaimPolicies names the policies init writes that the claim
	// certificate gets (recorded in cloud.json); none means the Greengrass
	// claim policy, which allows the CSR flow only.
	ClaimPolicies []string
}

// settings is cloud.json: what `cloud serve` needs besides the PKI.
type settings struct {
	Listen             string `json:"listen"`
	Region             string `json:"region"`
	AccountID          string `json:"accountId"`
	TokenLifetime      string `json:"tokenLifetime"`
	ClaimCertificateID string `json:"claimCertificateId"`
	// ClaimPolicies are the policies (policies/NAME.json) attached to the
	// claim certificate; none (a directory from before they were recorded)
	// means the Greengrass claim policy.
	ClaimPolicies []string  `json:"claimPolicies,omitempty"`
	CreatedAt     time.Time `json:"createdAt"`
}

// Init creates an emulator directory: CA, server and claim certificates,
// the Greengrass template and policies, a registry holding the claim, and a
// device config.yaml that points at the emulator. It refuses to touch a
// directory that already holds any of these files.
func Init(opts InitOptions) error {
	if opts.Dir == "" {
		return errors.New("no directory given")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return fmt.Errorf("directory %s: %w", opts.Dir, err)
	}
	listen := opts.Listen
	if listen == "" {
		listen = DefaultListen
	}
	host, port, err := splitListen(listen)
	if err != nil {
		return err
	}
	if port == 0 {
		return fmt.Errorf("%w %q: the device config needs a fixed port, not 0", ErrListen, listen)
	}
	files := []string{fileSettings, fileRegistry, fileRegistryJSON, fileCA, fileCAKey, fileRootCA, fileServerCert, fileServerKey,
		fileClaimCert, fileClaimKey, fileDeviceConfig, filepath.Join(dirTemplates, DefaultTemplateName+".json")}
	for _, f := range files {
		p := filepath.Join(dir, f)
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists: %s is %w; choose another --dir or remove it", p, dir, ErrInitialised)
		}
	}
	for _, d := range []string{dir, filepath.Join(dir, dirTemplates), filepath.Join(dir, dirPolicies), filepath.Join(dir, dirDevice)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
	}

	now := time.Now()
	ca, err := newAuthority(now)
	if err != nil {
		return err
	}
	caKey, err := keyPEM(ca.key)
	if err != nil {
		return err
	}
	serverKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate server key: %w", err)
	}
	hosts := []string{"localhost", "127.0.0.1"}
	deviceHost := host
	if deviceHost == "" || deviceHost == "0.0.0.0" || deviceHost == "::" {
		deviceHost = "127.0.0.1"
	}
	if deviceHost != "localhost" && deviceHost != "127.0.0.1" {
		hosts = append(hosts, deviceHost)
	}
	serverCert, err := ca.issue(serverKey.Public(), pkix.Name{CommonName: deviceHost}, hosts, now.Add(-time.Hour), now.AddDate(10, 0, 0))
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	serverKeyPEM, err := keyPEM(serverKey)
	if err != nil {
		return err
	}
	claimKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate claim key: %w", err)
	}
	claimCert, err := ca.issue(claimKey.Public(), pkix.Name{CommonName: "AWS IoT Certificate"}, nil, now.Add(-time.Hour), deviceCertNotAfter)
	if err != nil {
		return fmt.Errorf("claim certificate: %w", err)
	}
	claimKeyPEM, err := keyPEM(claimKey)
	if err != nil {
		return err
	}

	policies, err := initialPolicies()
	if err != nil {
		return err
	}
	claimPolicies := opts.ClaimPolicies
	if len(claimPolicies) == 0 {
		claimPolicies = []string{claimPolicyName}
	}
	for _, name := range claimPolicies {
		if _, ok := policies[name]; !ok {
			return fmt.Errorf("claim policy %q: %w; init writes %s", name, ErrPolicy, strings.Join(slices.Sorted(maps.Keys(policies)), ", "))
		}
	}
	claimID := CertificateID(claimCert.Raw)
	reg := newRegistry()
	reg.Certificates[claimID] = &Certificate{
		ID: claimID, Status: StatusActive, Policies: claimPolicies,
		CreatedAt: now.UTC(), Claim: true, PEM: string(certPEM(claimCert)),
	}
	st := settings{
		Listen: listen, Region: defaultRegion, AccountID: defaultAccountID,
		TokenLifetime: DefaultTokenLifetime.String(), ClaimCertificateID: claimID, ClaimPolicies: claimPolicies,
		CreatedAt: now.UTC(),
	}
	stJSON, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode settings: %w", err)
	}
	endpointHost := deviceHost
	if strings.Contains(endpointHost, ":") {
		// An IPv6 address: in brackets, or its last group reads as a port.
		endpointHost = "[" + endpointHost + "]"
	}
	devConf, err := deviceConfig(dir, endpointHost, port)
	if err != nil {
		return err
	}

	type file struct {
		name string
		data []byte
		mode os.FileMode
	}
	out := []file{
		{fileCA, certPEM(ca.cert), 0o644},
		{fileCAKey, caKey, 0o600},
		{fileRootCA, certPEM(ca.cert), 0o644},
		{fileServerCert, certPEM(serverCert), 0o644},
		{fileServerKey, serverKeyPEM, 0o600},
		{fileClaimCert, certPEM(claimCert), 0o644},
		{fileClaimKey, claimKeyPEM, 0o600},
		{filepath.Join(dirTemplates, DefaultTemplateName+".json"), greengrassTemplate, 0o644},
		{fileDeviceConfig, devConf, 0o644},
	}
	for name, doc := range policies {
		out = append(out, file{filepath.Join(dirPolicies, name+".json"), doc, 0o644})
	}
	for _, f := range out {
		if err := atomicfile.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	if err := compact(dir, reg); err != nil {
		return err
	}
	// cloud.json last: its presence marks a complete directory, so a
	// half-done init is never mistaken for one that can be served.
	return atomicfile.WriteFile(filepath.Join(dir, fileSettings), append(stJSON, '\n'), 0o644)
}

func splitListen(listen string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("%w %q: want host:port (%v)", ErrListen, listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%w %q: port %q is not a number from 0 to 65535", ErrListen, listen, portStr)
	}
	return host, port, nil
}

// initialPolicies returns the claim policies and the template's two device
// policies as plain IoT policy documents, resolved from the Greengrass
// CloudFormation snippets (and the AWS docs' CreateKeysAndCertificate claim
// policy) with the emulator's fake region and account and its template.
func initialPolicies() (map[string][]byte, error) {
	out := map[string][]byte{}
	claim := string(greengrassClaimPolicy)
	claim = strings.ReplaceAll(claim, "GGFleetProvisioningTemplate", DefaultTemplateName)
	claim = strings.ReplaceAll(claim, "<region>", defaultRegion)
	claim = strings.ReplaceAll(claim, "<account-id>", defaultAccountID)
	out[claimPolicyName] = []byte(claim)
	keys := string(docsCreateKeysClaimPolicy)
	keys = strings.ReplaceAll(keys, "provisioning-templates/templateName/", "provisioning-templates/"+DefaultTemplateName+"/")
	keys = strings.ReplaceAll(keys, "aws-region", defaultRegion)
	keys = strings.ReplaceAll(keys, "aws-account-id", defaultAccountID)
	out[createKeysClaimPolicyName] = []byte(keys)

	var cfn map[string]map[string]any
	if err := json.Unmarshal(greengrassDevicePolicies, &cfn); err != nil {
		return nil, fmt.Errorf("embedded device policies: %w", err)
	}
	ev := &evaluator{
		t: &Template{},
		values: map[string]string{
			"AWS::Region": defaultRegion, "AWS::AccountId": defaultAccountID, "AWS::StackName": defaultStackName,
		},
		getAtt: map[string]string{
			"GGTokenExchangeRoleAlias.RoleAliasArn": "arn:aws:iot:" + defaultRegion + ":" + defaultAccountID + ":rolealias/" + iotRoleAlias,
		},
	}
	for id, p := range cfn {
		name, err := ev.eval(p["PolicyName"])
		if err != nil {
			return nil, fmt.Errorf("embedded policy %s: %w", id, err)
		}
		doc, err := ev.eval(p["PolicyDocument"])
		if err != nil {
			return nil, fmt.Errorf("embedded policy %s: %w", id, err)
		}
		nameStr, ok := name.(string)
		if !ok || len(ev.missing) > 0 {
			return nil, fmt.Errorf("embedded policy %s: unresolved name or document", id)
		}
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("embedded policy %s: %w", id, err)
		}
		out[nameStr] = append(b, '\n')
	}
	return out, nil
}

var deviceConfigTmpl = template.Must(template.New("config").Funcs(template.FuncMap{"q": yamlQuote}).Parse(`---
# Greengrass nucleus lite config written by ` + "`fleetprov cloud init`" + `: it provisions
# against the local cloud emulator in {{q .Dir}}.
system:
  privateKeyPath: "" #[Must leave blank]
  certificateFilePath: "" #[Must leave blank]
  rootCaPath: "" #[Must leave blank]
  rootPath: {{q .RootPath}} #[Modify if needed]
  thingName: "" #[Must leave blank]
services:
  aws.greengrass.NucleusLite:
    componentType: "NUCLEUS"
    configuration:
      awsRegion: "us-east-1" #[Modify if needed]
      iotCredEndpoint: "" #[Must leave blank]
      iotDataEndpoint: "" #[Must leave blank]
      iotRoleAlias: {{q .RoleAlias}} #[Modify if needed]
      runWithDefault:
        posixUser: {{q .PosixUser}} #[Modify if needed]
      greengrassDataPlanePort: "8443"
  aws.greengrass.fleet_provisioning:
    configuration:
      iotDataEndpoint: {{q .Host}} #[The emulator's address]
      mqttPort: {{.Port}} #[The emulator's port]
      iotCredEndpoint: "localhost" #[The emulator serves no credentials endpoint]
      rootCaPath: {{q .RootCA}} #[Modify here]
      claimKeyPath: {{q .ClaimKey}} #[Modify here]
      claimCertPath: {{q .ClaimCert}} #[Modify here]
      csrCommonName: "aws-greengrass-nucleus-lite" #[Modify here]
      templateName: {{q .Template}} #[Modify here]
      templateParams:
        SerialNumber: {{q .Serial}} #[Modify here]
      outputDir: {{q .OutputDir}} #[Modify if needed]
      journalPath: {{q .Journal}} #[Modify if needed]
      restartStrategy: "none" #[Nothing to restart next to the emulator]
      # Optional: Custom paths for generated certificates (defaults to outputDir)
      # csrPath: "/custom/path/cert_req.pem" #[Optional]
      # certPath: "/custom/path/certificate.pem" #[Optional]
      # keyPath: "/custom/path/priv_key" #[Optional]
`))

// yamlQuote writes a double-quoted YAML scalar; a JSON string is one.
func yamlQuote(s string) string {
	b, _ := json.Marshal(s) // a string always encodes
	return string(b)
}

func deviceConfig(dir, host string, port int) ([]byte, error) {
	var buf bytes.Buffer
	err := deviceConfigTmpl.Execute(&buf, map[string]any{
		"Dir":       dir,
		"RootPath":  filepath.Join(dir, dirDevice),
		"RoleAlias": iotRoleAlias,
		"PosixUser": currentPosixUser(),
		"Host":      host,
		"Port":      port,
		"RootCA":    filepath.Join(dir, fileRootCA),
		"ClaimKey":  filepath.Join(dir, fileClaimKey),
		"ClaimCert": filepath.Join(dir, fileClaimCert),
		"Template":  DefaultTemplateName,
		"Serial":    sampleSerialNumber,
		"OutputDir": filepath.Join(dir, dirDevice, "credentials"),
		"Journal":   filepath.Join(dir, dirDevice, "journal"),
	})
	if err != nil {
		return nil, fmt.Errorf("render device config: %w", err)
	}
	return buf.Bytes(), nil
}

// currentPosixUser is "user:group" of whoever runs init: the emulator's
// device runs as that user, not as Greengrass's ggcore, which does not exist
// on a developer's machine.
func currentPosixUser() string {
	u, err := user.Current()
	if err != nil {
		return strconv.Itoa(os.Getuid()) + ":" + strconv.Itoa(os.Getgid())
	}
	group := u.Gid
	if g, err := user.LookupGroupId(u.Gid); err == nil {
		group = g.Name
	}
	return u.Username + ":" + group
}
