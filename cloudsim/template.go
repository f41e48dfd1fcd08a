package cloudsim

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits AWS IoT applies to provisioning templates, their parameters and the
// resources they create.
const (
	maxTemplateBody = 10240 // characters
	maxThingName    = 128
	maxParamKey     = 2048
	maxParamValue   = 4096
	maxResourceName = 128 // thing type, thing group, billing group, policy
	maxAttrName     = 128
	maxAttrValue    = 800
)

var (
	// Length bounds are checked apart from the alphabets: a bounded
	// repetition compiles into a program as many times the size, built at
	// every start of fleetprov, whatever the command.
	templateNameRE = regexp.MustCompile(`^[0-9A-Za-z_-]+$`)
	thingNameRE    = regexp.MustCompile(`^[a-zA-Z0-9:_-]+$`)
	// Thing types, thing groups and billing groups share the thing name's
	// alphabet.
	resourceNameRE = thingNameRE
	policyNameRE   = regexp.MustCompile(`^[\w+=,.@-]+$`)
	attrNameRE     = regexp.MustCompile(`^[a-zA-Z0-9_.,@/:#-]+$`)
	attrValueRE    = regexp.MustCompile(`^[a-zA-Z0-9_.,@/:#=\[\]-]*$`)
)

// Resource types a fleet provisioning template may declare.
const (
	resThing       = "AWS::IoT::Thing"
	resCertificate = "AWS::IoT::Certificate"
	resPolicy      = "AWS::IoT::Policy"
)

// ParamCertificateID is the parameter AWS IoT fills with the id of the
// certificate being registered.
const ParamCertificateID = "AWS::IoT::Certificate::Id"

// Values of a certificate's ThingPrincipalType, as AttachThingPrincipal
// spells them. AWS's default is NON_EXCLUSIVE_THING.
const (
	PrincipalExclusive    = "EXCLUSIVE_THING"
	PrincipalNonExclusive = "NON_EXCLUSIVE_THING"
)

// Template is a parsed, validated provisioning template.
type Template struct {
	Name string
	// Warnings are things AWS might refuse that the emulator accepts so
	// that published templates work (an undeclared Ref, a certificate
	// resource built from a CSR), each naming the JSON path. The server
	// logs them at load.
	Warnings []string

	params     map[string]paramDecl
	mappings   map[string]any
	resources  []resource
	deviceConf map[string]any
	required   []string // parameters a RegisterThing must supply, sorted
	settings   TemplateSettings
}

type paramDecl struct {
	Default *string
}

type resource struct {
	logicalID string
	typ       string
	props     map[string]any
	overrides map[string]string
}

// resourceSchema lists, per resource type, the properties a template may
// set and what each must hold. Unknown properties are refused at load: a
// typo such as ThingGroup would otherwise be silently ignored.
var resourceSchema = map[string]map[string]exprKind{
	resThing: {
		"ThingName": wantString, "AttributePayload": wantAttributes, "ThingTypeName": wantString,
		"ThingGroups": wantList, "BillingGroup": wantString,
	},
	resCertificate: {
		"CertificateId": wantString, "CertificateSigningRequest": wantString, "Status": wantString, "ThingPrincipalType": wantString,
	},
	resPolicy: {"PolicyName": wantString, "PolicyDocument": wantPolicyDocument},
}

// overridable lists the properties OverrideSettings may name, and whether
// MERGE makes sense for them (only for the two collections).
var overridable = map[string]map[string]bool{
	resThing:       {"AttributePayload": true, "ThingGroups": true, "ThingTypeName": false, "BillingGroup": false},
	resCertificate: {"Status": false},
}

// exprKind is what a position in a template must evaluate to.
type exprKind int

const (
	wantString exprKind = iota
	wantList
	wantAny            // inside a policy document: any JSON
	wantAttributes     // a literal object of attribute values
	wantPolicyDocument // an object, or a string holding one
)

func (k exprKind) String() string {
	switch k {
	case wantString:
		return "a string"
	case wantList:
		return "a list"
	case wantAttributes:
		return "an object of attribute values"
	case wantPolicyDocument:
		return "a policy document object or a string holding one"
	}
	return "a value"
}

func pathErr(path, format string, args ...any) error {
	return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
}

// validTemplateName is AWS's rule for template names: 1 to 36 of 0-9 A-Z
// a-z _ -.
func validTemplateName(name string) bool {
	return len(name) <= 36 && templateNameRE.MatchString(name)
}

// ParseTemplate validates a template body the way CreateProvisioningTemplate
// would, so a broken template fails when the emulator starts, naming the
// file and the JSON path inside it, rather than on a device's RegisterThing.
// It never panics, whatever the body holds.
func ParseTemplate(name string, body []byte) (*Template, error) {
	if !validTemplateName(name) {
		return nil, fmt.Errorf("template name %q: use 1-36 characters from 0-9 A-Z a-z _ -", name)
	}
	// AWS counts characters, not bytes.
	if n := utf8.RuneCount(body); n > maxTemplateBody {
		return nil, fmt.Errorf("template %s: body is %d characters, more than AWS IoT's limit of %d", name, n, maxTemplateBody)
	}
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("template %s: not valid template JSON: %w", name, err)
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("template %s: the body must be a JSON object, not %s", name, describe(doc))
	}
	t := &Template{Name: name, params: map[string]paramDecl{}, settings: defaultSettings()}
	p := &tmplParser{t: t, refs: map[string]bool{}, warned: map[string]bool{}}
	if err := p.parse(top); err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	req := map[string]bool{}
	for n, d := range t.params {
		if d.Default == nil {
			req[n] = true
		}
	}
	for n := range p.refs {
		if _, declared := t.params[n]; !declared {
			req[n] = true
		}
	}
	for n := range req {
		if isPseudoParam(n) {
			delete(req, n)
		}
	}
	t.required = slices.Sorted(maps.Keys(req))
	return t, nil
}

// tmplParser checks a template's shape once, at load.
type tmplParser struct {
	t      *Template
	refs   map[string]bool // every parameter a Ref or ${} names
	warned map[string]bool
}

func (p *tmplParser) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if !p.warned[msg] {
		p.warned[msg] = true
		p.t.Warnings = append(p.t.Warnings, msg)
	}
}

func (p *tmplParser) parse(top map[string]any) error {
	for _, k := range slices.Sorted(maps.Keys(top)) {
		switch k {
		case "Parameters", "Mappings", "Resources", "DeviceConfiguration", "AWSTemplateFormatVersion", "Description":
		default:
			return pathErr(k, "unknown section; a provisioning template has Parameters, Mappings, Resources and DeviceConfiguration")
		}
	}
	// Parameters and Mappings first: the rest is checked against them.
	if v, ok := top["Parameters"]; ok {
		if err := p.parameters(v); err != nil {
			return err
		}
	}
	if v, ok := top["Mappings"]; ok {
		if err := p.mappings(v); err != nil {
			return err
		}
	}
	res, ok := top["Resources"]
	if !ok {
		return pathErr("Resources", "missing; a template needs at least one resource")
	}
	if err := p.resources(res); err != nil {
		return err
	}
	if v, ok := top["DeviceConfiguration"]; ok {
		m, isObj := v.(map[string]any)
		if !isObj || isIntrinsic(m) {
			return pathErr("DeviceConfiguration", "want an object of names to string values, got %s", describe(v))
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if err := p.expr("DeviceConfiguration."+k, m[k], wantString); err != nil {
				return err
			}
		}
		p.t.deviceConf = m
	}
	return nil
}

func (p *tmplParser) parameters(v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		return pathErr("Parameters", "want an object of parameter declarations, got %s", describe(v))
	}
	for _, name := range slices.Sorted(maps.Keys(m)) {
		path := "Parameters." + name
		if name == "" || len(name) > maxParamKey {
			return pathErr(path, "a parameter name has 1-%d characters", maxParamKey)
		}
		decl, ok := m[name].(map[string]any)
		if !ok {
			return pathErr(path, "want {\"Type\": \"String\"}, got %s", describe(m[name]))
		}
		var d paramDecl
		for _, k := range slices.Sorted(maps.Keys(decl)) {
			switch k {
			case "Type":
				// Provisioning templates know only String parameters: the
				// device sends a map of strings.
				if decl[k] != "String" {
					return pathErr(path+".Type", "is %s; provisioning template parameters are of Type String", describe(decl[k]))
				}
			case "Default":
				s, ok := decl[k].(string)
				if !ok {
					return pathErr(path+".Default", "want a string, got %s", describe(decl[k]))
				}
				if len(s) > maxParamValue {
					return pathErr(path+".Default", "is %d characters, more than the %d a parameter value may have", len(s), maxParamValue)
				}
				d.Default = &s
			case "Description":
			default:
				return pathErr(path+"."+k, "unknown; a parameter declares Type and optionally Default and Description")
			}
		}
		if _, ok := decl["Type"]; !ok {
			return pathErr(path+".Type", "missing; declare {\"Type\": \"String\"}")
		}
		p.t.params[name] = d
	}
	return nil
}

func (p *tmplParser) mappings(v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		return pathErr("Mappings", "want an object of mappings, got %s", describe(v))
	}
	for _, name := range slices.Sorted(maps.Keys(m)) {
		l1, ok := m[name].(map[string]any)
		if !ok {
			return pathErr("Mappings."+name, "want an object of top-level keys, got %s", describe(m[name]))
		}
		for _, k1 := range slices.Sorted(maps.Keys(l1)) {
			l2, ok := l1[k1].(map[string]any)
			if !ok {
				return pathErr("Mappings."+name+"."+k1, "want an object of second-level keys, got %s", describe(l1[k1]))
			}
			for _, k2 := range slices.Sorted(maps.Keys(l2)) {
				path := "Mappings." + name + "." + k1 + "." + k2
				switch x := l2[k2].(type) {
				case string, float64, bool:
				case []any:
					for i, item := range x {
						if _, err := scalar(item); err != nil {
							return pathErr(fmt.Sprintf("%s[%d]", path, i), "want a string, got %s", describe(item))
						}
					}
				default:
					return pathErr(path, "want a string or a list of strings, got %s", describe(x))
				}
			}
		}
	}
	p.t.mappings = m
	return nil
}

func (p *tmplParser) resources(v any) error {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		return pathErr("Resources", "want an object of one or more resources, got %s", describe(v))
	}
	byType := map[string][]string{}
	for _, id := range slices.Sorted(maps.Keys(m)) {
		path := "Resources." + id
		r, ok := m[id].(map[string]any)
		if !ok {
			return pathErr(path, "want an object with Type and Properties, got %s", describe(m[id]))
		}
		for _, k := range slices.Sorted(maps.Keys(r)) {
			switch k {
			case "Type", "Properties", "OverrideSettings":
			default:
				return pathErr(path+"."+k, "not supported in provisioning templates; a resource has Type, Properties and OverrideSettings")
			}
		}
		typ, _ := r["Type"].(string)
		schema, known := resourceSchema[typ]
		if !known {
			return pathErr(path+".Type", "is %s; use AWS::IoT::Thing, AWS::IoT::Certificate or AWS::IoT::Policy", describe(r["Type"]))
		}
		byType[typ] = append(byType[typ], id)
		props, ok := r["Properties"].(map[string]any)
		if !ok {
			return pathErr(path+".Properties", "want an object, got %s", describe(r["Properties"]))
		}
		for _, k := range slices.Sorted(maps.Keys(props)) {
			kind, ok := schema[k]
			if !ok {
				return pathErr(path+".Properties."+k, "unknown property of %s; use %s", typ, strings.Join(slices.Sorted(maps.Keys(schema)), ", "))
			}
			if err := p.expr(path+".Properties."+k, props[k], kind); err != nil {
				return err
			}
		}
		if err := p.resourceRules(path, typ, props); err != nil {
			return err
		}
		res := resource{logicalID: id, typ: typ, props: props, overrides: map[string]string{}}
		if o, ok := r["OverrideSettings"]; ok {
			if err := p.overrideSettings(path+".OverrideSettings", typ, o, res.overrides); err != nil {
				return err
			}
		}
		p.t.resources = append(p.t.resources, res)
	}
	for _, typ := range []string{resThing, resCertificate} {
		if ids := byType[typ]; len(ids) > 1 {
			return pathErr("Resources", "%s and %s are both %s; a template has at most one", ids[0], ids[1], typ)
		}
	}
	return nil
}

// resourceRules checks what the schema cannot: required properties, and
// literal values that can never be right.
func (p *tmplParser) resourceRules(path, typ string, props map[string]any) error {
	literal := func(k string) (string, bool) {
		s, ok := props[k].(string)
		return s, ok
	}
	switch typ {
	case resThing:
		if _, ok := props["ThingName"]; !ok {
			return pathErr(path+".Properties.ThingName", "missing; a thing needs a name")
		}
		if s, ok := literal("ThingName"); ok && !validThingName(s) {
			return pathErr(path+".Properties.ThingName", "%q is not a thing name: use 1-128 characters from a-z A-Z 0-9 : _ -", s)
		}
	case resCertificate:
		_, hasID := props["CertificateId"]
		_, hasCSR := props["CertificateSigningRequest"]
		switch {
		case hasID && hasCSR:
			return pathErr(path+".Properties", "has both CertificateId and CertificateSigningRequest; use one")
		case !hasID && !hasCSR:
			return pathErr(path+".Properties.CertificateId", "missing; fleet provisioning needs {\"Ref\": \"AWS::IoT::Certificate::Id\"}")
		case hasCSR:
			// The docs' resource snippet does this (it is written for bulk
			// registration). Under fleet provisioning the certificate
			// already exists, so the emulator takes the CSR as a claim
			// about that certificate and checks it.
			p.warn("%s.Properties.CertificateSigningRequest: fleet provisioning registers the certificate of the ownership token; the CSR must carry that certificate's public key", path)
		}
		if s, ok := literal("Status"); ok {
			if _, err := certStatus(s); err != nil {
				return pathErr(path+".Properties.Status", "%v", err)
			}
		}
		if s, ok := literal("ThingPrincipalType"); ok && s != PrincipalExclusive && s != PrincipalNonExclusive {
			return pathErr(path+".Properties.ThingPrincipalType", "is %q; use EXCLUSIVE_THING or NON_EXCLUSIVE_THING", s)
		}
	case resPolicy:
		_, hasName := props["PolicyName"]
		_, hasDoc := props["PolicyDocument"]
		if hasName == hasDoc {
			return pathErr(path+".Properties", "needs exactly one of PolicyName and PolicyDocument")
		}
		if s, ok := literal("PolicyName"); ok && !validPolicyName(s) {
			return pathErr(path+".Properties.PolicyName", "%q is not a policy name: use 1-128 characters from a-z A-Z 0-9 _ + = , . @ -", s)
		}
	}
	return nil
}

func (p *tmplParser) overrideSettings(path, typ string, v any, out map[string]string) error {
	allowed := overridable[typ]
	if allowed == nil {
		return pathErr(path, "only AWS::IoT::Thing and AWS::IoT::Certificate resources take OverrideSettings")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return pathErr(path, "want an object of property names to DO_NOTHING, REPLACE, FAIL or MERGE, got %s", describe(v))
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		mergeable, known := allowed[k]
		if !known {
			return pathErr(path+"."+k, "not a property OverrideSettings can name; use %s", strings.Join(slices.Sorted(maps.Keys(allowed)), ", "))
		}
		s, _ := m[k].(string)
		switch s {
		case overrideDoNothing, overrideReplace, overrideFail:
		case overrideMerge:
			if !mergeable {
				return pathErr(path+"."+k, "MERGE applies only to AttributePayload and ThingGroups")
			}
		default:
			return pathErr(path+"."+k, "is %s; use DO_NOTHING, REPLACE, FAIL or MERGE", describe(m[k]))
		}
		out[k] = s
	}
	return nil
}

// isIntrinsic reports whether an object is a function call: one key, Ref
// or Fn::something.
func isIntrinsic(m map[string]any) bool {
	if len(m) != 1 {
		return false
	}
	for k := range m {
		return k == "Ref" || strings.HasPrefix(k, "Fn::")
	}
	return false
}

// expr checks a value that may hold intrinsic functions against what its
// position needs.
func (p *tmplParser) expr(path string, v any, want exprKind) error {
	switch x := v.(type) {
	case string, float64, bool:
		switch want {
		case wantList, wantAttributes:
			return pathErr(path, "want %s, got %s", want, describe(v))
		case wantPolicyDocument:
			s, ok := x.(string)
			if !ok {
				return pathErr(path, "want %s, got %s", want, describe(v))
			}
			var doc map[string]any
			if err := json.Unmarshal([]byte(s), &doc); err != nil || doc == nil {
				return pathErr(path, "the string is not a JSON policy document object")
			}
		}
		return nil
	case nil:
		return pathErr(path, "want %s, got null", want)
	case []any:
		switch want {
		case wantString, wantAttributes, wantPolicyDocument:
			return pathErr(path, "want %s, got a list", want)
		}
		item := wantString
		if want == wantAny {
			item = wantAny
		}
		for i, vv := range x {
			if err := p.expr(fmt.Sprintf("%s[%d]", path, i), vv, item); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		if isIntrinsic(x) {
			for fn, arg := range x {
				return p.fn(path, fn, arg, want)
			}
		}
		for k := range x {
			if k == "Ref" || strings.HasPrefix(k, "Fn::") {
				return pathErr(path, "%s must be the only key of its object", k)
			}
		}
		switch want {
		case wantString, wantList:
			return pathErr(path, "want %s, got an object", want)
		}
		inner := wantAny
		if want == wantAttributes {
			inner = wantString
		}
		for _, k := range slices.Sorted(maps.Keys(x)) {
			if err := p.expr(path+"."+k, x[k], inner); err != nil {
				return err
			}
		}
		return nil
	}
	return pathErr(path, "unexpected value %v", v)
}

// fn checks one intrinsic function call. Shapes are checked here, once,
// so that evaluation only meets errors that depend on the parameters.
func (p *tmplParser) fn(path, fn string, arg any, want exprKind) error {
	gives := wantString
	args, _ := arg.([]any)
	switch fn {
	case "Ref":
		name, ok := arg.(string)
		if !ok || name == "" {
			return pathErr(path, "Ref wants a parameter name, got %s", describe(arg))
		}
		p.ref(path, name)
	case "Fn::Join":
		if len(args) != 2 {
			return pathErr(path, "Fn::Join wants [delimiter, [values]]")
		}
		if _, ok := args[0].(string); !ok {
			return pathErr(path, "Fn::Join wants [delimiter, [values]]: the delimiter must be a literal string, got %s", describe(args[0]))
		}
		if err := p.expr(path+".Fn::Join[1]", args[1], wantList); err != nil {
			return err
		}
	case "Fn::Select":
		if len(args) != 2 {
			return pathErr(path, "Fn::Select wants [index, [values]]")
		}
		idx := -1
		switch i := args[0].(type) {
		case float64:
			if i < 0 || i != float64(int(i)) {
				return pathErr(path, "Fn::Select index %v is not a whole number from 0", i)
			}
			idx = int(i)
		case string:
			n, err := strconv.Atoi(i)
			if err != nil || n < 0 {
				return pathErr(path, "Fn::Select index %q is not a whole number from 0", i)
			}
			idx = n
		case map[string]any:
			if err := p.expr(path+".Fn::Select[0]", i, wantString); err != nil {
				return err
			}
		default:
			return pathErr(path, "Fn::Select index must be a number, a string of digits or a function, got %s", describe(args[0]))
		}
		if err := p.expr(path+".Fn::Select[1]", args[1], wantList); err != nil {
			return err
		}
		if list, ok := args[1].([]any); ok && idx >= len(list) {
			return pathErr(path, "Fn::Select index %d is out of range for a list of %d", idx, len(list))
		}
	case "Fn::Split":
		if len(args) != 2 {
			return pathErr(path, "Fn::Split wants [delimiter, string]")
		}
		if d, ok := args[0].(string); !ok || d == "" {
			return pathErr(path, "Fn::Split wants [delimiter, string]: the delimiter must be a non-empty literal string, got %s", describe(args[0]))
		}
		if err := p.expr(path+".Fn::Split[1]", args[1], wantString); err != nil {
			return err
		}
		gives = wantList
	case "Fn::FindInMap":
		if len(args) != 3 {
			return pathErr(path, "Fn::FindInMap wants [map name, top-level key, second-level key]")
		}
		for i, a := range args {
			if err := p.expr(fmt.Sprintf("%s.Fn::FindInMap[%d]", path, i), a, wantString); err != nil {
				return err
			}
		}
		var err error
		if gives, err = p.findInMapKind(path, args); err != nil {
			return err
		}
	case "Fn::Sub":
		if err := p.sub(path, arg); err != nil {
			return err
		}
	default:
		return pathErr(path, "%s is not supported in provisioning templates; use Ref, Fn::Join, Fn::Select, Fn::Split, Fn::FindInMap or Fn::Sub", fn)
	}
	switch {
	case want == wantAny, want == gives:
	case want == wantPolicyDocument && gives == wantString:
		// A function may build the escaped-string form.
	case gives == wantAny && (want == wantString || want == wantList):
		// Fn::FindInMap with a key known only at evaluation.
	default:
		return pathErr(path, "%s gives %s; want %s", fn, gives, want)
	}
	return nil
}

// findInMapKind checks literal map names and keys against Mappings and
// tells what the lookup gives, when that is known at load.
func (p *tmplParser) findInMapKind(path string, args []any) (exprKind, error) {
	name, ok := args[0].(string)
	if !ok {
		return wantAny, nil
	}
	l1, ok := p.t.mappings[name].(map[string]any)
	if !ok {
		return 0, pathErr(path, "Fn::FindInMap: no mapping %q under Mappings", name)
	}
	k1, ok := args[1].(string)
	if !ok {
		return wantAny, nil
	}
	l2, ok := l1[k1].(map[string]any)
	if !ok {
		return 0, pathErr(path, "Fn::FindInMap: mapping %s has no key %q", name, k1)
	}
	k2, ok := args[2].(string)
	if !ok {
		return wantAny, nil
	}
	v, ok := l2[k2]
	if !ok {
		return 0, pathErr(path, "Fn::FindInMap: mapping %s.%s has no key %q", name, k1, k2)
	}
	if _, isList := v.([]any); isList {
		return wantList, nil
	}
	return wantString, nil
}

func (p *tmplParser) sub(path string, arg any) error {
	var text string
	vars := map[string]any{}
	switch a := arg.(type) {
	case string:
		text = a
	case []any:
		ok := false
		if len(a) == 2 {
			text, ok = a[0].(string)
			vars, _ = a[1].(map[string]any)
		}
		if !ok || vars == nil {
			return pathErr(path, "Fn::Sub wants a string or [string, {variables}]")
		}
		for _, k := range slices.Sorted(maps.Keys(vars)) {
			if err := p.expr(path+".Fn::Sub[1]."+k, vars[k], wantString); err != nil {
				return err
			}
		}
	default:
		return pathErr(path, "Fn::Sub wants a string or [string, {variables}]")
	}
	names, err := subNames(text)
	if err != nil {
		return pathErr(path, "%v", err)
	}
	for _, n := range names {
		if strings.Contains(n, ".") {
			return pathErr(path, "Fn::Sub: ${%s} names a resource attribute; provisioning templates have no Fn::GetAtt", n)
		}
		if _, local := vars[n]; !local {
			p.ref(path, n)
		}
	}
	return nil
}

// ref records a parameter reference. An undeclared one is accepted with a
// warning: the AWS docs' own hook example Refs SerialNumber without
// declaring it, and the issue asks that every published template work; at
// evaluation the value comes from the request's parameters, and a request
// without it is refused as a missing parameter.
func (p *tmplParser) ref(path, name string) {
	p.refs[name] = true
	if _, declared := p.t.params[name]; declared || isPseudoParam(name) {
		return
	}
	p.warn("%s: Ref to undeclared parameter %q: taken from the request's parameters; declare it under Parameters", path, name)
}

// subNames returns the variable names of an Fn::Sub string, skipping
// ${!Literal} escapes.
func subNames(text string) ([]string, error) {
	var names []string
	for {
		i := strings.Index(text, "${")
		if i < 0 {
			return names, nil
		}
		j := strings.Index(text[i:], "}")
		if j < 0 {
			return nil, fmt.Errorf("Fn::Sub: ${ without a closing }")
		}
		name := text[i+2 : i+j]
		text = text[i+j+1:]
		if strings.HasPrefix(name, "!") {
			continue
		}
		if strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("Fn::Sub: empty ${}")
		}
		names = append(names, name)
	}
}

func isPseudoParam(name string) bool {
	switch name {
	case ParamCertificateID, "AWS::Region", "AWS::AccountId":
		return true
	}
	return false
}

// describe names a JSON value's type for an error message.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(x)
	case float64:
		return "the number " + strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return "the boolean " + strconv.FormatBool(x)
	case []any:
		return "a list"
	case map[string]any:
		if isIntrinsic(x) {
			for k := range x {
				return "a " + k
			}
		}
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func validThingName(s string) bool {
	return s != "" && len(s) <= maxThingName && thingNameRE.MatchString(s)
}

func validResourceName(s string) bool {
	return s != "" && len(s) <= maxResourceName && resourceNameRE.MatchString(s)
}

func validPolicyName(s string) bool {
	return s != "" && len(s) <= maxResourceName && policyNameRE.MatchString(s)
}

func certStatus(s string) (string, error) {
	switch strings.ToUpper(s) {
	case StatusActive:
		return StatusActive, nil
	case StatusInactive:
		return StatusInactive, nil
	}
	return "", fmt.Errorf("%q is not a certificate status; use ACTIVE or INACTIVE", s)
}
