package cloudsim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Limits AWS IoT applies to provisioning templates and things.
const (
	maxTemplateBody = 10240
	maxThingName    = 128
)

var (
	templateNameRE = regexp.MustCompile(`^[0-9A-Za-z_-]{1,36}$`)
	thingNameRE    = regexp.MustCompile(`^[a-zA-Z0-9:_-]+$`)
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

// Template is a parsed, validated provisioning template.
type Template struct {
	Name       string
	params     map[string]paramDecl
	mappings   map[string]any
	resources  []resource
	deviceConf map[string]any
}

type paramDecl struct {
	Type    string  `json:"Type"`
	Default *string `json:"Default"`
}

type resource struct {
	logicalID string
	typ       string
	props     map[string]any
	overrides map[string]string
}

// ParseTemplate validates a template body the way CreateProvisioningTemplate
// would, so a broken template fails when the emulator starts, naming the
// file, rather than on a device's RegisterThing.
func ParseTemplate(name string, body []byte) (*Template, error) {
	if !templateNameRE.MatchString(name) {
		return nil, fmt.Errorf("template name %q: use 1-36 characters from 0-9 A-Z a-z _ -", name)
	}
	if len(body) > maxTemplateBody {
		return nil, fmt.Errorf("template %s: body is %d characters, more than AWS IoT's limit of %d", name, len(body), maxTemplateBody)
	}
	var raw struct {
		Parameters          map[string]paramDecl      `json:"Parameters"`
		Mappings            map[string]any            `json:"Mappings"`
		Resources           map[string]map[string]any `json:"Resources"`
		DeviceConfiguration map[string]any            `json:"DeviceConfiguration"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("template %s: not valid template JSON: %w", name, err)
	}
	t := &Template{Name: name, params: raw.Parameters, mappings: raw.Mappings, deviceConf: raw.DeviceConfiguration}
	if t.params == nil {
		t.params = map[string]paramDecl{}
	}
	ids := make([]string, 0, len(raw.Resources))
	for id := range raw.Resources {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	count := map[string]int{}
	for _, id := range ids {
		r := raw.Resources[id]
		typ, _ := r["Type"].(string)
		switch typ {
		case resThing, resCertificate, resPolicy:
		default:
			return nil, fmt.Errorf("template %s: resource %s has Type %q; use AWS::IoT::Thing, AWS::IoT::Certificate or AWS::IoT::Policy", name, id, typ)
		}
		count[typ]++
		props, _ := r["Properties"].(map[string]any)
		if props == nil {
			return nil, fmt.Errorf("template %s: resource %s has no Properties object", name, id)
		}
		res := resource{logicalID: id, typ: typ, props: props, overrides: map[string]string{}}
		if o, ok := r["OverrideSettings"].(map[string]any); ok {
			for k, v := range o {
				s, _ := v.(string)
				switch s {
				case overrideDoNothing, overrideReplace, overrideFail, overrideMerge:
				default:
					return nil, fmt.Errorf("template %s: resource %s: OverrideSettings %s is %v; use DO_NOTHING, REPLACE, FAIL or MERGE", name, id, k, v)
				}
				res.overrides[k] = s
			}
		}
		if typ == resPolicy {
			_, hasName := props["PolicyName"]
			_, hasDoc := props["PolicyDocument"]
			if hasName == hasDoc {
				return nil, fmt.Errorf("template %s: policy %s must have exactly one of PolicyName and PolicyDocument", name, id)
			}
		}
		if typ == resCertificate {
			if _, ok := props["CertificateId"]; !ok {
				return nil, fmt.Errorf("template %s: certificate %s has no CertificateId; fleet provisioning needs {\"Ref\": \"AWS::IoT::Certificate::Id\"}", name, id)
			}
		}
		if err := t.check(props); err != nil {
			return nil, fmt.Errorf("template %s: resource %s: %w", name, id, err)
		}
		t.resources = append(t.resources, res)
	}
	if count[resThing] > 1 || count[resCertificate] > 1 {
		return nil, fmt.Errorf("template %s: at most one AWS::IoT::Thing and one AWS::IoT::Certificate resource are allowed", name)
	}
	if err := t.check(raw.DeviceConfiguration); err != nil {
		return nil, fmt.Errorf("template %s: DeviceConfiguration: %w", name, err)
	}
	return t, nil
}

// check walks a value for intrinsic functions AWS IoT does not know and for
// Refs to undeclared parameters: AWS refuses such templates at creation.
func (t *Template) check(v any) error {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 1 {
			for k, arg := range x {
				switch k {
				case "Ref":
					name, ok := arg.(string)
					if !ok {
						return fmt.Errorf("Ref takes a parameter name, got %v", arg)
					}
					if _, declared := t.params[name]; !declared && !isPseudoParam(name) {
						return fmt.Errorf("Ref to undeclared parameter %q: declare it under Parameters", name)
					}
					return nil
				case "Fn::Join", "Fn::Select", "Fn::Split", "Fn::FindInMap", "Fn::Sub":
					return t.check(arg)
				}
				if strings.HasPrefix(k, "Fn::") {
					return fmt.Errorf("intrinsic function %s is not supported in provisioning templates", k)
				}
			}
		}
		for _, vv := range x {
			if err := t.check(vv); err != nil {
				return err
			}
		}
	case []any:
		for _, vv := range x {
			if err := t.check(vv); err != nil {
				return err
			}
		}
	}
	return nil
}

func isPseudoParam(name string) bool {
	switch name {
	case ParamCertificateID, "AWS::Region", "AWS::AccountId":
		return true
	}
	return false
}

// Evaluation is what a template produced for one RegisterThing.
type Evaluation struct {
	Thing               *ThingSpec
	Certificate         *CertificateSpec
	Policies            []PolicySpec
	DeviceConfiguration map[string]string
}

// ThingSpec is the thing a template asks for, and how to treat an existing
// thing of that name (OverrideSettings by property name).
type ThingSpec struct {
	Name          string
	Attributes    map[string]string
	Groups        []string
	ThingTypeName string
	BillingGroup  string
	Overrides     map[string]string
}

// CertificateSpec is the certificate resource: which certificate, and the
// status it gets (ACTIVE or INACTIVE).
type CertificateSpec struct {
	ID     string
	Status string
}

// PolicySpec names an existing policy (Name) or carries an inline document
// (Document, with Name derived from its content).
type PolicySpec struct {
	Name     string
	Document json.RawMessage
}

// ParameterError is a RegisterThing failure caused by the parameters the
// device sent: missing values, or values that produce an invalid resource.
type ParameterError struct{ Msg string }

func (e *ParameterError) Error() string { return e.Msg }

// Evaluate resolves the template with the device's parameters. params must
// already include AWS::IoT::Certificate::Id.
func (t *Template) Evaluate(params map[string]string, pseudo map[string]string) (*Evaluation, error) {
	ev := &evaluator{t: t, values: map[string]string{}}
	for k, v := range pseudo {
		ev.values[k] = v
	}
	for name, decl := range t.params {
		if v, ok := params[name]; ok {
			ev.values[name] = v
		} else if decl.Default != nil {
			ev.values[name] = *decl.Default
		}
	}
	if v, ok := params[ParamCertificateID]; ok {
		ev.values[ParamCertificateID] = v
	}
	out := &Evaluation{DeviceConfiguration: map[string]string{}}
	for _, r := range t.resources {
		resolved, err := ev.eval(r.props)
		if err != nil {
			return nil, fmt.Errorf("resource %s: %w", r.logicalID, err)
		}
		props := resolved.(map[string]any)
		switch r.typ {
		case resThing:
			spec, err := thingSpec(props, r.overrides)
			if err != nil && len(ev.missing) == 0 {
				return nil, fmt.Errorf("resource %s: %w", r.logicalID, err)
			}
			out.Thing = spec
		case resCertificate:
			id, _ := props["CertificateId"].(string)
			status := StatusActive
			if s, ok := props["Status"]; ok {
				str, _ := s.(string)
				switch strings.ToUpper(str) {
				case StatusActive:
				case StatusInactive:
					status = StatusInactive
				default:
					return nil, fmt.Errorf("resource %s: Status %v: use ACTIVE or INACTIVE", r.logicalID, s)
				}
			}
			out.Certificate = &CertificateSpec{ID: id, Status: status}
		case resPolicy:
			if n, ok := props["PolicyName"]; ok {
				name, isStr := n.(string)
				if !isStr || name == "" {
					return nil, fmt.Errorf("resource %s: PolicyName must be a non-empty string", r.logicalID)
				}
				out.Policies = append(out.Policies, PolicySpec{Name: name})
				continue
			}
			doc, err := policyDocument(props["PolicyDocument"])
			if err != nil {
				return nil, fmt.Errorf("resource %s: %w", r.logicalID, err)
			}
			// AWS names a template's inline policy after its content; a
			// stable hash keeps one policy for a fleet instead of one each.
			sum := sha256.Sum256(doc)
			out.Policies = append(out.Policies, PolicySpec{Name: t.Name + "_" + hex.EncodeToString(sum[:8]), Document: doc})
		}
	}
	if t.deviceConf != nil {
		resolved, err := ev.eval(t.deviceConf)
		if err != nil {
			return nil, fmt.Errorf("DeviceConfiguration: %w", err)
		}
		for k, v := range resolved.(map[string]any) {
			s, err := scalar(v)
			if err != nil {
				return nil, fmt.Errorf("DeviceConfiguration %s: %w", k, err)
			}
			out.DeviceConfiguration[k] = s
		}
	}
	if len(ev.missing) > 0 {
		names := make([]string, 0, len(ev.missing))
		for n := range ev.missing {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, &ParameterError{Msg: fmt.Sprintf("Missing value for parameter(s) %s required by template %s.", strings.Join(names, ", "), t.Name)}
	}
	return out, nil
}

func thingSpec(props map[string]any, overrides map[string]string) (*ThingSpec, error) {
	spec := &ThingSpec{Attributes: map[string]string{}, Overrides: overrides}
	name, _ := props["ThingName"].(string)
	if name == "" || len(name) > maxThingName || !thingNameRE.MatchString(name) {
		return nil, &ParameterError{Msg: fmt.Sprintf("Thing name %q is invalid: use 1-128 characters from a-z A-Z 0-9 : _ -.", name)}
	}
	spec.Name = name
	if a, ok := props["AttributePayload"].(map[string]any); ok {
		for k, v := range a {
			s, err := scalar(v)
			if err != nil {
				return nil, fmt.Errorf("AttributePayload %s: %w", k, err)
			}
			spec.Attributes[k] = s
		}
	}
	if g, ok := props["ThingGroups"].([]any); ok {
		for _, v := range g {
			s, err := scalar(v)
			if err != nil {
				return nil, fmt.Errorf("ThingGroups: %w", err)
			}
			spec.Groups = append(spec.Groups, s)
		}
	}
	spec.ThingTypeName, _ = props["ThingTypeName"].(string)
	spec.BillingGroup, _ = props["BillingGroup"].(string)
	return spec, nil
}

func policyDocument(v any) (json.RawMessage, error) {
	var doc any
	switch d := v.(type) {
	case string:
		if err := json.Unmarshal([]byte(d), &doc); err != nil {
			return nil, fmt.Errorf("PolicyDocument string is not JSON: %w", err)
		}
	case map[string]any:
		doc = d
	default:
		return nil, fmt.Errorf("PolicyDocument must be a JSON object or a string holding one")
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode PolicyDocument: %w", err)
	}
	return b, nil
}

// scalar turns a resolved template value into the string AWS stores.
func scalar(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case bool:
		return strconv.FormatBool(x), nil
	}
	return "", fmt.Errorf("value %v is not a string", v)
}

type evaluator struct {
	t       *Template
	values  map[string]string
	missing map[string]bool
	// getAtt resolves Fn::GetAtt; only the emulator's own CloudFormation
	// snippets use it, never a provisioning template.
	getAtt map[string]string
}

func (e *evaluator) ref(name string) string {
	if v, ok := e.values[name]; ok {
		return v
	}
	if e.missing == nil {
		e.missing = map[string]bool{}
	}
	e.missing[name] = true
	return ""
}

func (e *evaluator) eval(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 1 {
			for k, arg := range x {
				if k == "Ref" || strings.HasPrefix(k, "Fn::") {
					return e.call(k, arg)
				}
			}
		}
		out := make(map[string]any, len(x))
		for k, vv := range x {
			r, err := e.eval(vv)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, 0, len(x))
		for _, vv := range x {
			r, err := e.eval(vv)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	}
	return v, nil
}

func (e *evaluator) evalString(v any, what string) (string, error) {
	r, err := e.eval(v)
	if err != nil {
		return "", err
	}
	s, err := scalar(r)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return s, nil
}

func (e *evaluator) evalList(v any, what string) ([]string, error) {
	r, err := e.eval(v)
	if err != nil {
		return nil, err
	}
	list, ok := r.([]any)
	if !ok {
		return nil, fmt.Errorf("%s: want a list, got %v", what, r)
	}
	out := make([]string, 0, len(list))
	for _, item := range list {
		s, err := scalar(item)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func (e *evaluator) call(fn string, arg any) (any, error) {
	args, _ := arg.([]any)
	switch fn {
	case "Ref":
		name, ok := arg.(string)
		if !ok {
			return nil, fmt.Errorf("Ref takes a parameter name, got %v", arg)
		}
		return e.ref(name), nil
	case "Fn::Join":
		if len(args) != 2 {
			return nil, fmt.Errorf("Fn::Join takes [delimiter, [values]]")
		}
		delim, ok := args[0].(string)
		if !ok {
			return nil, fmt.Errorf("Fn::Join delimiter must be a string")
		}
		parts, err := e.evalList(args[1], "Fn::Join")
		if err != nil {
			return nil, err
		}
		return strings.Join(parts, delim), nil
	case "Fn::Select":
		if len(args) != 2 {
			return nil, fmt.Errorf("Fn::Select takes [index, [values]]")
		}
		idxStr, err := e.evalString(args[0], "Fn::Select index")
		if err != nil {
			return nil, err
		}
		list, err := e.evalList(args[1], "Fn::Select")
		if err != nil {
			return nil, err
		}
		idx, err := strconv.Atoi(idxStr)
		if err != nil || idx < 0 || idx >= len(list) {
			return nil, &ParameterError{Msg: fmt.Sprintf("Fn::Select index %s is out of range for a list of %d.", idxStr, len(list))}
		}
		return list[idx], nil
	case "Fn::Split":
		if len(args) != 2 {
			return nil, fmt.Errorf("Fn::Split takes [delimiter, string]")
		}
		delim, ok := args[0].(string)
		if !ok || delim == "" {
			return nil, fmt.Errorf("Fn::Split delimiter must be a non-empty string")
		}
		s, err := e.evalString(args[1], "Fn::Split")
		if err != nil {
			return nil, err
		}
		var out []any
		for _, p := range strings.Split(s, delim) {
			out = append(out, p)
		}
		return out, nil
	case "Fn::FindInMap":
		if len(args) != 3 {
			return nil, fmt.Errorf("Fn::FindInMap takes [map, key, key]")
		}
		var keys [3]string
		for i := range args {
			s, err := e.evalString(args[i], "Fn::FindInMap")
			if err != nil {
				return nil, err
			}
			keys[i] = s
		}
		if len(e.missing) > 0 {
			return "", nil // the missing parameter is the error to report
		}
		m, _ := e.t.mappings[keys[0]].(map[string]any)
		if m == nil {
			return nil, fmt.Errorf("Fn::FindInMap: no mapping %q", keys[0])
		}
		l2, _ := m[keys[1]].(map[string]any)
		if l2 == nil {
			return nil, &ParameterError{Msg: fmt.Sprintf("Fn::FindInMap: mapping %s has no key %q.", keys[0], keys[1])}
		}
		v, ok := l2[keys[2]]
		if !ok {
			return nil, &ParameterError{Msg: fmt.Sprintf("Fn::FindInMap: mapping %s.%s has no key %q.", keys[0], keys[1], keys[2])}
		}
		return v, nil
	case "Fn::Sub":
		var text string
		vars := map[string]string{}
		switch a := arg.(type) {
		case string:
			text = a
		case []any:
			if len(a) != 2 {
				return nil, fmt.Errorf("Fn::Sub takes a string or [string, {variables}]")
			}
			text, _ = a[0].(string)
			m, _ := a[1].(map[string]any)
			for k, vv := range m {
				s, err := e.evalString(vv, "Fn::Sub variable "+k)
				if err != nil {
					return nil, err
				}
				vars[k] = s
			}
		default:
			return nil, fmt.Errorf("Fn::Sub takes a string or [string, {variables}]")
		}
		return e.sub(text, vars)
	case "Fn::GetAtt":
		if e.getAtt != nil {
			key := ""
			switch a := arg.(type) {
			case string:
				key = a
			case []any:
				if len(a) == 2 {
					key = fmt.Sprintf("%v.%v", a[0], a[1])
				}
			}
			if v, ok := e.getAtt[key]; ok {
				return v, nil
			}
		}
	}
	return nil, fmt.Errorf("intrinsic function %s is not supported", fn)
}

func (e *evaluator) sub(text string, vars map[string]string) (string, error) {
	var b bytes.Buffer
	for {
		i := strings.Index(text, "${")
		if i < 0 {
			b.WriteString(text)
			return b.String(), nil
		}
		b.WriteString(text[:i])
		j := strings.Index(text[i:], "}")
		if j < 0 {
			return "", errors.New("Fn::Sub: unterminated ${")
		}
		name := text[i+2 : i+j]
		text = text[i+j+1:]
		if strings.HasPrefix(name, "!") { // ${!Literal} stays literal
			b.WriteString("${" + name[1:] + "}")
			continue
		}
		if v, ok := vars[name]; ok {
			b.WriteString(v)
			continue
		}
		b.WriteString(e.ref(name))
	}
}
