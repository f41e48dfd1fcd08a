package cloudsim

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

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

// CertificateSpec is the certificate resource: which certificate, the
// status it gets (ACTIVE or INACTIVE) and how it is attached to the thing.
type CertificateSpec struct {
	ID string
	// CSR is set instead of ID when the template names the certificate by
	// CertificateSigningRequest; it must match the registered certificate.
	CSR           string
	Status        string
	PrincipalType string // EXCLUSIVE_THING or NON_EXCLUSIVE_THING
}

// PolicySpec names an existing policy (Name) or carries an inline document
// (Document, with Name derived from its content).
type PolicySpec struct {
	Name     string
	Document json.RawMessage
}

// ParameterError is a RegisterThing failure caused by the parameters the
// device sent: missing values, or values that produce an invalid resource.
// Msg is what the device reads in errorMessage.
type ParameterError struct{ Msg string }

func (e *ParameterError) Error() string { return e.Msg }

func paramErr(path, format string, args ...any) error {
	return &ParameterError{Msg: fmt.Sprintf("%s: %s.", path, fmt.Sprintf(format, args...))}
}

// CheckParameterLimits applies AWS's limits on parameter keys and values
// (documented for the HTTP API; the MQTT API is assumed to share them).
func CheckParameterLimits(params map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if k == "" || len(k) > maxParamKey {
			return &ParameterError{Msg: fmt.Sprintf("Parameter name %.40q... is %d characters; a name has 1-%d.", k, len(k), maxParamKey)}
		}
		if v := params[k]; len(v) > maxParamValue {
			return &ParameterError{Msg: fmt.Sprintf("Parameter %s is %d characters; a value has at most %d.", k, len(v), maxParamValue)}
		}
	}
	return nil
}

// Evaluate resolves the template with the device's parameters (after any
// hook overrides). params must already include AWS::IoT::Certificate::Id;
// pseudo holds AWS::Region and AWS::AccountId, which a device cannot set.
// Declared parameters the request lacks take their Default. Every error is
// a *ParameterError: the template's shape was checked at load.
func (t *Template) Evaluate(params map[string]string, pseudo map[string]string) (*Evaluation, error) {
	ev := &evaluator{t: t, values: map[string]string{}}
	maps.Copy(ev.values, params)
	for name, decl := range t.params {
		if _, ok := ev.values[name]; !ok && decl.Default != nil {
			ev.values[name] = *decl.Default
		}
	}
	maps.Copy(ev.values, pseudo)
	// Every parameter is needed (no Conditions), so all missing ones are
	// reported at once, before any value is built from an empty string.
	var missing []string
	for _, n := range t.required {
		if _, ok := ev.values[n]; !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, &ParameterError{Msg: fmt.Sprintf("Missing value for parameter(s) %s required by template %s.", strings.Join(missing, ", "), t.Name)}
	}

	out := &Evaluation{DeviceConfiguration: map[string]string{}}
	for _, r := range t.resources {
		path := "Resources." + r.logicalID + ".Properties"
		props := map[string]any{}
		for _, k := range slices.Sorted(maps.Keys(r.props)) {
			v, err := ev.evalAt(path+"."+k, r.props[k])
			if err != nil {
				return nil, err
			}
			props[k] = v
		}
		var err error
		switch r.typ {
		case resThing:
			out.Thing, err = thingSpec(path, props, r.overrides)
		case resCertificate:
			out.Certificate, err = certificateSpec(path, props)
		case resPolicy:
			var p PolicySpec
			p, err = t.policySpec(path, props)
			out.Policies = append(out.Policies, p)
		}
		if err != nil {
			return nil, err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(t.deviceConf)) {
		s, err := ev.evalString("DeviceConfiguration."+k, t.deviceConf[k])
		if err != nil {
			return nil, err
		}
		out.DeviceConfiguration[k] = s
	}
	if len(ev.missing) > 0 {
		// Unreachable while the parser records every reference; kept so a
		// parser gap shows as a clear rejection, not an empty value.
		return nil, &ParameterError{Msg: fmt.Sprintf("Missing value for parameter(s) %s required by template %s.", strings.Join(slices.Sorted(maps.Keys(ev.missing)), ", "), t.Name)}
	}
	return out, nil
}

func thingSpec(path string, props map[string]any, overrides map[string]string) (*ThingSpec, error) {
	spec := &ThingSpec{Attributes: map[string]string{}, Overrides: overrides}
	spec.Name, _ = props["ThingName"].(string)
	if !validThingName(spec.Name) {
		return nil, &ParameterError{Msg: fmt.Sprintf("Thing name %q is invalid: use 1-128 characters from a-z A-Z 0-9 : _ -.", spec.Name)}
	}
	if a, ok := props["AttributePayload"].(map[string]any); ok {
		for _, k := range slices.Sorted(maps.Keys(a)) {
			s, err := scalar(a[k])
			if err != nil {
				return nil, paramErr(path+".AttributePayload."+k, "%v", err)
			}
			if len(k) > maxAttrName || !attrNameRE.MatchString(k) {
				return nil, paramErr(path+".AttributePayload."+k, "%q is not an attribute name: use 1-%d characters from a-z A-Z 0-9 _ . , @ / : # -", k, maxAttrName)
			}
			if len(s) > maxAttrValue || !attrValueRE.MatchString(s) {
				return nil, paramErr(path+".AttributePayload."+k, "%q is not an attribute value: use at most %d characters from a-z A-Z 0-9 _ . , @ / : # = [ ] -", s, maxAttrValue)
			}
			spec.Attributes[k] = s
		}
	}
	if g, ok := props["ThingGroups"]; ok {
		list, _ := g.([]any)
		for i, v := range list {
			s, err := scalar(v)
			if err == nil && !validResourceName(s) {
				err = fmt.Errorf("%q is not a thing group name: use 1-128 characters from a-z A-Z 0-9 : _ -", s)
			}
			if err != nil {
				return nil, paramErr(fmt.Sprintf("%s.ThingGroups[%d]", path, i), "%v", err)
			}
			spec.Groups = append(spec.Groups, s)
		}
	}
	for _, k := range []string{"ThingTypeName", "BillingGroup"} {
		v, ok := props[k]
		if !ok {
			continue
		}
		s, _ := scalar(v)
		if !validResourceName(s) {
			return nil, paramErr(path+"."+k, "%q is not a valid name: use 1-128 characters from a-z A-Z 0-9 : _ -", s)
		}
		if k == "ThingTypeName" {
			spec.ThingTypeName = s
		} else {
			spec.BillingGroup = s
		}
	}
	return spec, nil
}

func certificateSpec(path string, props map[string]any) (*CertificateSpec, error) {
	spec := &CertificateSpec{Status: StatusActive, PrincipalType: PrincipalNonExclusive}
	spec.ID, _ = props["CertificateId"].(string)
	spec.CSR, _ = props["CertificateSigningRequest"].(string)
	if v, ok := props["Status"]; ok {
		s, _ := v.(string)
		st, err := certStatus(s)
		if err != nil {
			return nil, paramErr(path+".Status", "%v", err)
		}
		spec.Status = st
	}
	if v, ok := props["ThingPrincipalType"]; ok {
		s, _ := v.(string)
		if s != PrincipalExclusive && s != PrincipalNonExclusive {
			return nil, paramErr(path+".ThingPrincipalType", "%q: use EXCLUSIVE_THING or NON_EXCLUSIVE_THING", s)
		}
		spec.PrincipalType = s
	}
	return spec, nil
}

func (t *Template) policySpec(path string, props map[string]any) (PolicySpec, error) {
	if n, ok := props["PolicyName"]; ok {
		name, _ := n.(string)
		if !validPolicyName(name) {
			return PolicySpec{}, paramErr(path+".PolicyName", "%q is not a policy name", name)
		}
		return PolicySpec{Name: name}, nil
	}
	doc, err := policyDocument(props["PolicyDocument"])
	if err != nil {
		return PolicySpec{}, paramErr(path+".PolicyDocument", "%v", err)
	}
	// AWS names a template's inline policy itself; a name derived from the
	// content keeps one policy for a fleet instead of one per device.
	sum := sha256.Sum256(doc)
	return PolicySpec{Name: t.Name + "_" + hex.EncodeToString(sum[:8]), Document: doc}, nil
}

// policyDocument normalises a document given as an object or as a string
// holding one, so both spellings store the same policy.
func policyDocument(v any) (json.RawMessage, error) {
	var doc map[string]any
	switch d := v.(type) {
	case string:
		if err := json.Unmarshal([]byte(d), &doc); err != nil || doc == nil {
			return nil, fmt.Errorf("the string is not a JSON policy document object")
		}
	case map[string]any:
		doc = d
	default:
		return nil, fmt.Errorf("want a JSON object or a string holding one")
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
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
	return "", fmt.Errorf("want a string, got %s", describe(v))
}

// evaluator resolves intrinsic functions. init.go also uses it, with
// getAtt, for the Greengrass CloudFormation policy snippets.
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

func (e *evaluator) eval(v any) (any, error) { return e.evalAt("", v) }

func (e *evaluator) evalAt(path string, v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		if isIntrinsic(x) {
			for k, arg := range x {
				return e.call(path, k, arg)
			}
		}
		out := make(map[string]any, len(x))
		for _, k := range slices.Sorted(maps.Keys(x)) {
			r, err := e.evalAt(path+"."+k, x[k])
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, 0, len(x))
		for i, vv := range x {
			r, err := e.evalAt(fmt.Sprintf("%s[%d]", path, i), vv)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	}
	return v, nil
}

func (e *evaluator) evalString(path string, v any) (string, error) {
	r, err := e.evalAt(path, v)
	if err != nil {
		return "", err
	}
	s, err := scalar(r)
	if err != nil {
		return "", paramErr(path, "%v", err)
	}
	return s, nil
}

func (e *evaluator) evalList(path string, v any) ([]string, error) {
	r, err := e.evalAt(path, v)
	if err != nil {
		return nil, err
	}
	list, ok := r.([]any)
	if !ok {
		return nil, paramErr(path, "want a list, got %s", describe(r))
	}
	out := make([]string, 0, len(list))
	for i, item := range list {
		s, err := scalar(item)
		if err != nil {
			return nil, paramErr(fmt.Sprintf("%s[%d]", path, i), "%v", err)
		}
		out = append(out, s)
	}
	return out, nil
}

// call runs one function. The shapes were checked by the parser; the
// checks here keep a template built in code (init.go) from panicking.
func (e *evaluator) call(path, fn string, arg any) (any, error) {
	args, _ := arg.([]any)
	switch fn {
	case "Ref":
		name, ok := arg.(string)
		if !ok {
			return nil, paramErr(path, "Ref wants a parameter name")
		}
		return e.ref(name), nil
	case "Fn::Join":
		delim, ok := "", len(args) == 2
		if ok {
			delim, ok = args[0].(string)
		}
		if !ok {
			return nil, paramErr(path, "Fn::Join wants [delimiter, [values]]")
		}
		parts, err := e.evalList(path+".Fn::Join[1]", args[1])
		if err != nil {
			return nil, err
		}
		return strings.Join(parts, delim), nil
	case "Fn::Select":
		if len(args) != 2 {
			return nil, paramErr(path, "Fn::Select wants [index, [values]]")
		}
		idxStr, err := e.evalString(path+".Fn::Select[0]", args[0])
		if err != nil {
			return nil, err
		}
		list, err := e.evalList(path+".Fn::Select[1]", args[1])
		if err != nil {
			return nil, err
		}
		idx, err := strconv.Atoi(idxStr)
		if err != nil || idx < 0 {
			return nil, paramErr(path, "Fn::Select index %q is not a whole number from 0", idxStr)
		}
		if idx >= len(list) {
			return nil, paramErr(path, "Fn::Select index %d is out of range for a list of %d", idx, len(list))
		}
		return list[idx], nil
	case "Fn::Split":
		delim, ok := "", len(args) == 2
		if ok {
			delim, ok = args[0].(string)
		}
		if !ok || delim == "" {
			return nil, paramErr(path, "Fn::Split wants [delimiter, string]")
		}
		s, err := e.evalString(path+".Fn::Split[1]", args[1])
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
			return nil, paramErr(path, "Fn::FindInMap wants [map name, top-level key, second-level key]")
		}
		var keys [3]string
		for i := range args {
			s, err := e.evalString(fmt.Sprintf("%s.Fn::FindInMap[%d]", path, i), args[i])
			if err != nil {
				return nil, err
			}
			keys[i] = s
		}
		l1, _ := e.t.mappings[keys[0]].(map[string]any)
		if l1 == nil {
			return nil, paramErr(path, "Fn::FindInMap: no mapping %q", keys[0])
		}
		l2, _ := l1[keys[1]].(map[string]any)
		if l2 == nil {
			return nil, paramErr(path, "Fn::FindInMap: mapping %s has no key %q", keys[0], keys[1])
		}
		v, ok := l2[keys[2]]
		if !ok {
			return nil, paramErr(path, "Fn::FindInMap: mapping %s.%s has no key %q", keys[0], keys[1], keys[2])
		}
		return v, nil
	case "Fn::Sub":
		var text string
		vars := map[string]string{}
		switch a := arg.(type) {
		case string:
			text = a
		case []any:
			m, ok := map[string]any(nil), len(a) == 2
			if ok {
				text, ok = a[0].(string)
				m, _ = a[1].(map[string]any)
			}
			if !ok || m == nil {
				return nil, paramErr(path, "Fn::Sub wants a string or [string, {variables}]")
			}
			for _, k := range slices.Sorted(maps.Keys(m)) {
				s, err := e.evalString(path+".Fn::Sub[1]."+k, m[k])
				if err != nil {
					return nil, err
				}
				vars[k] = s
			}
		default:
			return nil, paramErr(path, "Fn::Sub wants a string or [string, {variables}]")
		}
		return e.sub(path, text, vars)
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
	return nil, paramErr(path, "%s is not supported", fn)
}

func (e *evaluator) sub(path, text string, vars map[string]string) (string, error) {
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
			return "", paramErr(path, "Fn::Sub: ${ without a closing }")
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

// checkCertificateResource holds the template's certificate resource to the
// certificate being registered: by id, or by the public key of a CSR.
func checkCertificateResource(spec *CertificateSpec, cert *Certificate) *Rejection {
	if spec == nil {
		return nil
	}
	if spec.CSR == "" {
		if spec.ID != cert.ID {
			return reject(400, CodeInvalidParameters, "Template certificate resource names certificate %q, not the one being registered; use {\"Ref\": \"AWS::IoT::Certificate::Id\"}.", spec.ID)
		}
		return nil
	}
	csr, err := parseCSR(spec.CSR)
	if err != nil {
		return reject(400, CodeInvalidParameters, "Template certificate resource: %v.", err)
	}
	block, _ := pem.Decode([]byte(cert.PEM))
	if block == nil {
		return reject(500, CodeInternalFailure, "Internal failure: certificate %s has no PEM.", cert.ID)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return reject(500, CodeInternalFailure, "Internal failure: certificate %s: %v.", cert.ID, err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if k, ok := c.PublicKey.(equaler); !ok || !k.Equal(csr.PublicKey) {
		return reject(400, CodeInvalidParameters, "Template certificate resource: the CertificateSigningRequest does not carry the public key of the certificate being registered.")
	}
	return nil
}
