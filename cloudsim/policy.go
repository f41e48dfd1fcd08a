package cloudsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Policy is a parsed AWS IoT policy document. It is immutable once parsed,
// so one value is shared by every connection it is attached to.
type Policy struct {
	Name       string
	statements []statement
	// variables is false for Version 2008-10-17 (or none): IAM then treats
	// ${...} as literal text, and so does the emulator.
	variables bool
}

type statement struct {
	allow bool
	// notAction and notResource invert the lists, as IAM's NotAction and
	// NotResource do.
	actions, resources     []pattern
	notAction, notResource bool
	conditional            bool // has a Condition, which is not evaluated
	index                  int  // 1-based, for messages
	sid                    string
}

// pattern is an IAM wildcard pattern with policy variables, split once at
// load so matching does no parsing.
type pattern []token

type tokenKind uint8

const (
	tokLiteral tokenKind = iota
	tokStar              // any run of characters, '/' and ':' included
	tokOne               // exactly one character
	tokVar               // ${name}, resolved per request
)

type token struct {
	kind tokenKind
	text string // literal text or variable name
}

// Policy versions IAM knows.
const (
	policyVersion2012 = "2012-10-17"
	policyVersion2008 = "2008-10-17"
)

// ParsePolicy parses an IoT policy document (a JSON object, or a JSON string
// holding one, as templates may write it). The error names the element at
// fault, not the policy: callers add the file or policy name.
func ParsePolicy(name string, doc []byte) (*Policy, error) {
	doc = bytes.TrimSpace(doc)
	if len(doc) > 0 && doc[0] == '"' {
		var s string
		if err := json.Unmarshal(doc, &s); err != nil {
			return nil, fmt.Errorf("not a JSON policy document: %w", err)
		}
		doc = []byte(s)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(doc, &top); err != nil {
		return nil, fmt.Errorf("not a JSON policy document: %w", err)
	}
	if top == nil {
		return nil, errors.New("not a JSON policy document: null")
	}
	for k := range top {
		if k != "Version" && k != "Statement" && k != "Id" {
			return nil, fmt.Errorf("unknown element %q (want Version, Statement, Id)", k)
		}
	}
	p := &Policy{Name: name}
	if raw, ok := top["Version"]; ok {
		var v string
		if err := json.Unmarshal(raw, &v); err != nil || (v != policyVersion2012 && v != policyVersion2008) {
			return nil, fmt.Errorf("Version %s is not %q or %q", compactJSON(raw), policyVersion2012, policyVersion2008)
		}
		p.variables = v == policyVersion2012
	}
	raw, ok := top["Statement"]
	if !ok {
		return nil, errors.New("no Statement")
	}
	var list []json.RawMessage
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '{' {
		list = []json.RawMessage{raw}
	} else if err := json.Unmarshal(raw, &list); err != nil {
		return nil, errors.New("Statement is neither an object nor a list of objects")
	}
	if len(list) == 0 {
		return nil, errors.New("Statement is empty")
	}
	for i, r := range list {
		st, err := parseStatement(r, i+1, p.variables)
		if err != nil {
			return nil, err
		}
		p.statements = append(p.statements, st)
	}
	return p, nil
}

// compactJSON is a value as the document wrote it, on one line: an error
// quoting it is one line too.
func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return strconv.Quote(string(raw))
	}
	return b.String()
}

func parseStatement(raw json.RawMessage, index int, variables bool) (statement, error) {
	st := statement{index: index}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return st, fmt.Errorf("statement %d is not a JSON object", index)
	}
	where := fmt.Sprintf("statement %d", index)
	if s, ok := m["Sid"]; ok {
		if err := json.Unmarshal(s, &st.sid); err != nil {
			return st, fmt.Errorf("%s: Sid is not a string", where)
		}
		where += fmt.Sprintf(" (Sid %q)", st.sid)
	}
	for k := range m {
		switch k {
		case "Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition":
		case "Principal", "NotPrincipal":
			// IoT policies are attached to a certificate: the principal is
			// implied, and AWS refuses a document that names one.
			return st, fmt.Errorf("%s: %s is not allowed in an IoT policy", where, k)
		default:
			return st, fmt.Errorf("%s: unknown element %q", where, k)
		}
	}
	var effect string
	if err := json.Unmarshal(m["Effect"], &effect); err != nil || (effect != "Allow" && effect != "Deny") {
		if _, ok := m["Effect"]; !ok {
			return st, fmt.Errorf("%s: no Effect", where)
		}
		return st, fmt.Errorf("%s: Effect %s is not \"Allow\" or \"Deny\"", where, compactJSON(m["Effect"]))
	}
	st.allow = effect == "Allow"
	_, st.conditional = m["Condition"]

	var err error
	if st.actions, st.notAction, err = patternList(m, "Action", where, false); err != nil {
		return st, err
	}
	for _, a := range st.actions {
		// "*" alone, or service:name; anything else is a typo AWS refuses.
		if s := a.String(); s != "*" && !strings.Contains(s, ":") {
			return st, fmt.Errorf("%s: action %q is not \"*\" or service:action (e.g. iot:Publish)", where, s)
		}
	}
	if st.resources, st.notResource, err = patternList(m, "Resource", where, variables); err != nil {
		return st, err
	}
	return st, nil
}

// patternList reads Action/NotAction (or Resource/NotResource): exactly one
// of the two, a string or a list of non-empty strings.
func patternList(m map[string]json.RawMessage, elem, where string, variables bool) ([]pattern, bool, error) {
	raw, ok := m[elem]
	notRaw, notOK := m["Not"+elem]
	switch {
	case ok && notOK:
		return nil, false, fmt.Errorf("%s: both %s and Not%s", where, elem, elem)
	case !ok && !notOK:
		return nil, false, fmt.Errorf("%s: no %s", where, elem)
	case notOK:
		raw, elem = notRaw, "Not"+elem
	}
	var list []string
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		list = []string{one}
	} else if err := json.Unmarshal(raw, &list); err != nil {
		return nil, false, fmt.Errorf("%s: %s is neither a string nor a list of strings", where, elem)
	}
	if len(list) == 0 {
		return nil, false, fmt.Errorf("%s: %s is empty", where, elem)
	}
	out := make([]pattern, 0, len(list))
	for _, s := range list {
		if s == "" {
			return nil, false, fmt.Errorf("%s: %s has an empty entry", where, elem)
		}
		pat, err := compilePattern(s, variables)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %s %q: %w", where, elem, s, err)
		}
		out = append(out, pat)
	}
	return out, notOK, nil
}

// compilePattern splits s into literals, wildcards and (when the policy
// version has them) variables. ${*}, ${?} and ${$} are IAM's escapes for a
// literal '*', '?' and '$'.
func compilePattern(s string, variables bool) (pattern, error) {
	var p pattern
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			p = append(p, token{kind: tokLiteral, text: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '*':
			flush()
			p = append(p, token{kind: tokStar})
		case c == '?':
			flush()
			p = append(p, token{kind: tokOne})
		case c == '$' && variables && i+1 < len(s) && s[i+1] == '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unclosed ${ at offset %d", i)
			}
			name := s[i+2 : i+2+end]
			i += 2 + end
			switch name {
			case "*", "?", "$":
				lit.WriteString(name)
			case "":
				return nil, fmt.Errorf("empty variable ${} at offset %d", i-2)
			default:
				flush()
				p = append(p, token{kind: tokVar, text: name})
			}
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	return p, nil
}

// String gives the pattern back as written (variables as ${name}).
func (p pattern) String() string {
	var b strings.Builder
	for _, t := range p {
		switch t.kind {
		case tokLiteral:
			b.WriteString(t.text)
		case tokStar:
			b.WriteByte('*')
		case tokOne:
			b.WriteByte('?')
		case tokVar:
			b.WriteString("${" + t.text + "}")
		}
	}
	return b.String()
}

// match reports whether s matches the pattern. A variable that does not
// resolve makes the pattern match nothing, as AWS does, so a device without
// a thing is never granted what a ${iot:Connection.Thing.ThingName} resource
// grants. fold compares case-insensitively (actions are; resources are not).
func (p pattern) match(s string, vars func(string) (string, bool), fold bool) bool {
	// Flatten to one element per character, so a resolved value, which is
	// literal even if it holds '*' or '?', cannot act as a wildcard.
	type elem struct {
		kind tokenKind
		r    rune
	}
	// Stack buffers for the usual sizes: a policy check runs several
	// matches, and every device's requests run several checks.
	var esBuf [128]elem
	var rsBuf [128]rune
	es := esBuf[:0]
	for _, t := range p {
		text := t.text
		switch t.kind {
		case tokStar, tokOne:
			es = append(es, elem{kind: t.kind})
			continue
		case tokVar:
			v, ok := vars(t.text)
			if !ok {
				return false
			}
			text = v
		}
		for _, r := range text {
			es = append(es, elem{kind: tokLiteral, r: r})
		}
	}
	rs := rsBuf[:0]
	for _, r := range s {
		rs = append(rs, r)
	}
	eq := func(a, b rune) bool {
		if a == b {
			return true
		}
		return fold && strings.EqualFold(string(a), string(b))
	}
	// Classic wildcard matching: remember the last '*' and retry from one
	// character further on a mismatch; linear in practice, quadratic at worst.
	pi, si, star, mark := 0, 0, -1, 0
	for si < len(rs) {
		switch {
		case pi < len(es) && (es[pi].kind == tokOne || (es[pi].kind == tokLiteral && eq(es[pi].r, rs[si]))):
			pi++
			si++
		case pi < len(es) && es[pi].kind == tokStar:
			star, mark = pi, si
			pi++
		case star >= 0:
			mark++
			pi, si = star+1, mark
		default:
			return false
		}
	}
	for pi < len(es) && es[pi].kind == tokStar {
		pi++
	}
	return pi == len(es)
}

// Effect is the outcome of evaluating policies for one request.
type Effect int

// Outcomes. Deny is an explicit Deny statement; NoMatch is the default deny
// of IAM ("implicitDeny").
const (
	NoMatch Effect = iota
	Allowed
	Denied
)

func (e Effect) String() string {
	switch e {
	case Allowed:
		return "allow"
	case Denied:
		return "explicit deny"
	}
	return "implicit deny"
}

// Evaluate decides one request against the policies attached to a
// principal: an explicit Deny in any policy wins over every Allow, and
// nothing allowed is denied.
func Evaluate(policies []*Policy, p Principal, action Action, resourceARN string) Effect {
	vars := p.variable
	out := NoMatch
	for _, pol := range policies {
		v := vars
		if !pol.variables {
			v = nil
		}
		for i := range pol.statements {
			st := &pol.statements[i]
			if !st.applies(action, resourceARN, v) {
				continue
			}
			if !st.allow {
				return Denied
			}
			out = Allowed
		}
	}
	return out
}

func (st *statement) applies(action Action, arn string, vars func(string) (string, bool)) bool {
	if st.conditional && st.allow {
		// Conditions are not evaluated; failing closed means an Allow that
		// depends on one grants nothing (and a conditional Deny denies).
		return false
	}
	noVars := func(string) (string, bool) { return "", false }
	resolve := vars
	if resolve == nil {
		resolve = noVars
	}
	if matchesAny(st.actions, string(action), noVars, true) == st.notAction {
		return false
	}
	if st.notResource {
		for _, r := range st.resources {
			if !resolvable(r, resolve) {
				// An unknown value must not widen what the statement
				// grants: an Allow is skipped, a Deny still denies.
				return !st.allow
			}
			if r.match(arn, resolve, false) {
				return false
			}
		}
		return true
	}
	return matchesAny(st.resources, arn, resolve, false)
}

func matchesAny(ps []pattern, s string, vars func(string) (string, bool), fold bool) bool {
	return slices.ContainsFunc(ps, func(p pattern) bool { return p.match(s, vars, fold) })
}

func resolvable(p pattern, vars func(string) (string, bool)) bool {
	for _, t := range p {
		if t.kind == tokVar {
			if _, ok := vars(t.text); !ok {
				return false
			}
		}
	}
	return true
}

// Policy variables the emulator resolves.
const (
	varClientID       = "iot:ClientId"
	varThingName      = "iot:Connection.Thing.ThingName"
	varThingType      = "iot:Connection.Thing.ThingTypeName"
	varIsAttached     = "iot:Connection.Thing.IsAttached"
	varAttributesOpen = "iot:Connection.Thing.Attributes["
)

// variable resolves a policy variable for this principal; ok is false for a
// variable with no value here or one the emulator does not know, so the
// pattern using it matches nothing.
func (p Principal) variable(name string) (string, bool) {
	switch name {
	case varClientID:
		return p.ClientID, p.ClientID != ""
	case varThingName:
		return p.ThingName, p.ThingName != ""
	case varThingType:
		return p.ThingTypeName, p.ThingTypeName != ""
	case varIsAttached:
		if p.ThingName != "" {
			return "true", true
		}
		return "false", true
	}
	if attr, ok := strings.CutPrefix(name, varAttributesOpen); ok {
		if attr, ok = strings.CutSuffix(attr, "]"); ok {
			v, ok := p.ThingAttributes[attr]
			return v, ok
		}
	}
	return "", false
}

// ResourceARN is the ARN IoT policies are matched against: client/ID for
// iot:Connect, topicfilter/FILTER for iot:Subscribe, topic/TOPIC otherwise.
func ResourceARN(region, account string, action Action, name string) string {
	kind := "topic"
	switch action {
	case ActionConnect:
		kind = "client"
	case ActionSubscribe:
		kind = "topicfilter"
	}
	return "arn:aws:iot:" + region + ":" + account + ":" + kind + "/" + name
}

// loadPolicies parses every D/policies/NAME.json; a malformed one stops
// Open, naming the file, so a typo is found at start-up rather than as a
// mysterious "not authorized" later.
func (s *Server) loadPolicies() error {
	s.policies = map[string]bool{}
	s.policyDocs = map[string]*Policy{}
	s.inline = map[string]inlinePolicy{}
	paths, err := filepath.Glob(filepath.Join(s.dir, dirPolicies, "*.json"))
	if err != nil {
		return fmt.Errorf("list policies: %w", err)
	}
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read policy: %w", err)
		}
		name := strings.TrimSuffix(filepath.Base(path), ".json")
		pol, err := ParsePolicy(name, b)
		if err != nil {
			return fmt.Errorf("%s: invalid policy: %w", path, err)
		}
		s.policies[name] = true
		s.policyDocs[name] = pol
	}
	return nil
}

// inlinePolicy caches the parse of a policy a template stored in the
// registry, keyed by name and checked against the text, so a document
// replaced under the same name is parsed again.
type inlinePolicy struct {
	raw string
	pol *Policy
}

// policyLocked returns the named policy, from policies/ or the registry's
// inline ones; nil if it is missing or malformed, which grants nothing.
// s.mu must be held.
func (s *Server) policyLocked(name string) *Policy {
	if pol, ok := s.policyDocs[name]; ok {
		return pol
	}
	raw, ok := s.reg.Policies[name]
	if !ok {
		s.log.Warn("attached policy not found; it grants nothing", "policy", name)
		return nil
	}
	s.inlineMu.Lock()
	defer s.inlineMu.Unlock()
	if c, ok := s.inline[name]; ok && c.raw == string(raw) {
		return c.pol
	}
	pol, err := ParsePolicy(name, raw)
	if err != nil {
		// Stored by a template at run time, so it cannot stop start-up;
		// logged once per text, and it grants nothing.
		s.log.Warn("inline policy is invalid; it grants nothing", "policy", name, "error", err)
	}
	s.inline[name] = inlinePolicy{raw: string(raw), pol: pol}
	return pol
}

// applyClaimPolicies decides the claim certificate's policies (Options,
// then cloud.json, then the Greengrass one init writes), checks they exist
// and records them on every claim certificate in the registry, so `cloud
// certs` shows what is enforced. It reports whether the registry changed.
func (s *Server) applyClaimPolicies(override []string) (bool, error) {
	names := override
	if len(names) == 0 {
		names = s.st.ClaimPolicies
	}
	if len(names) == 0 {
		names = []string{claimPolicyName}
	}
	for _, name := range names {
		if _, ok := s.policyDocs[name]; !ok {
			return false, fmt.Errorf("claim policy %q: %w: no file %s", name, ErrPolicy, filepath.Join(s.dir, dirPolicies, name+".json"))
		}
	}
	changed := false
	for _, c := range s.reg.Certificates {
		if c.Claim && !slices.Equal(c.Policies, names) {
			c.Policies = slices.Clone(names)
			changed = true
		}
	}
	return changed, nil
}

// principalLocked describes a connection as the registry knows its
// certificate now: a certificate deactivated (or a thing attached) after
// CONNECT takes effect on the next check. s.mu must be held.
func (s *Server) principalLocked(certID, clientID string) Principal {
	p := Principal{CertificateID: certID, ClientID: clientID, Status: "UNKNOWN"}
	c, ok := s.reg.Certificates[certID]
	if !ok {
		return p
	}
	p.Claim, p.Status = c.Claim, c.Status
	if t, ok := s.reg.Things[c.ThingName]; ok && c.ThingName != "" {
		p.ThingName, p.ThingTypeName = t.Name, t.ThingTypeName
		// A copy: the registry's map changes under s.mu, the authorizer
		// reads it without.
		p.ThingAttributes = make(map[string]string, len(t.Attributes))
		for k, v := range t.Attributes {
			p.ThingAttributes[k] = v
		}
	}
	if c.Status != StatusActive {
		// Policies of a certificate that is not ACTIVE grant nothing.
		return p
	}
	for _, name := range c.Policies {
		if pol := s.policyLocked(name); pol != nil {
			p.Policies = append(p.Policies, pol)
		}
	}
	return p
}
