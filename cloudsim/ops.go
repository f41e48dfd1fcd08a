package cloudsim

import (
	"crypto"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"
)

// Rejection codes the emulator answers with on .../rejected. AWS publishes
// no full list; these follow the codes seen in the field (see
// docs/cloud-emulator.md).
const (
	CodeInvalidPayload                   = "InvalidPayload"                   // 400: not JSON, wrong types, missing or bad CSR
	CodeInvalidCertificateOwnershipToken = "InvalidCertificateOwnershipToken" // 400: empty, unknown or expired token
	CodeInvalidParameters                = "InvalidParameters"                // 400: missing parameter, invalid resulting resource
	CodeResourceNotFound                 = "ResourceNotFound"                 // 404: unknown template or policy
	CodeResourceConflict                 = "ResourceConflict"                 // 409: OverrideSettings FAIL on an existing thing
	CodeInternalFailure                  = "InternalFailure"                  // 500: the emulator could not save its registry
)

// Rejection is the payload of every .../rejected answer.
type Rejection struct {
	StatusCode   int    `json:"statusCode"`
	ErrorCode    string `json:"errorCode"`
	ErrorMessage string `json:"errorMessage"`
}

func reject(status int, code, format string, args ...any) *Rejection {
	return &Rejection{StatusCode: status, ErrorCode: code, ErrorMessage: fmt.Sprintf(format, args...)}
}

// The emulator's own encoding of the wire payloads, written from the AWS
// developer guide (fleet-provision-api), independent of the device client.
type (
	createFromCsrRequest struct {
		CSR string `json:"certificateSigningRequest"`
	}
	createFromCsrAccepted struct {
		CertificateID  string `json:"certificateId"`
		CertificatePEM string `json:"certificatePem"`
		Token          string `json:"certificateOwnershipToken"`
	}
	registerThingRequest struct {
		Token      string            `json:"certificateOwnershipToken"`
		Parameters map[string]string `json:"parameters"`
	}
	registerThingAccepted struct {
		ThingName           string            `json:"thingName"`
		DeviceConfiguration map[string]string `json:"deviceConfiguration"`
	}
)

// codec encodes one payload format: JSON or CBOR, under the same keys.
type codec interface {
	decode(b []byte, v any) error
	encode(v any) ([]byte, error)
}

type jsonCodec struct{}

func (jsonCodec) decode(b []byte, v any) error { return json.Unmarshal(b, v) }
func (jsonCodec) encode(v any) ([]byte, error) { return json.Marshal(v) }

var codecs = map[string]codec{"json": jsonCodec{}, "cbor": cborCodec{}}

// request is a parsed request topic. Answers go to Topic + "/accepted" or
// "/rejected".
type request struct {
	Op       string
	Format   string
	Template string // RegisterThing only
	Topic    string
}

// parseRequestTopic recognises the request topics of the operations the
// emulator serves:
//
//	$aws/certificates/create-from-csr/{fmt}
//	$aws/certificates/create/{fmt}
//	$aws/provisioning-templates/{templateName}/provision/{fmt}
func parseRequestTopic(topic string) (request, bool) {
	p := strings.Split(topic, "/")
	switch {
	case len(p) == 4 && p[0] == "$aws" && p[1] == "certificates" && p[2] == "create-from-csr":
		if _, ok := codecs[p[3]]; ok {
			return request{Op: OpCreateCertificateFromCsr, Format: p[3], Topic: topic}, true
		}
	case len(p) == 4 && p[0] == "$aws" && p[1] == "certificates" && p[2] == "create":
		if _, ok := codecs[p[3]]; ok {
			return request{Op: OpCreateKeysAndCertificate, Format: p[3], Topic: topic}, true
		}
	case len(p) == 5 && p[0] == "$aws" && p[1] == "provisioning-templates" && p[3] == "provision":
		if _, ok := codecs[p[4]]; ok && validTemplateName(p[2]) {
			return request{Op: OpRegisterThing, Format: p[4], Template: p[2], Topic: topic}, true
		}
	}
	return request{}, false
}

// isProvisioningTopic reports whether a topic (or, for a subscription, a
// filter) is a request or response topic of a served operation.
func isProvisioningTopic(topic string, filter bool) bool {
	if _, ok := parseRequestTopic(topic); ok {
		return true
	}
	suffixes := []string{"/accepted", "/rejected"}
	if filter {
		suffixes = append(suffixes, "/+", "/#")
	}
	for _, suf := range suffixes {
		if base, ok := strings.CutSuffix(topic, suf); ok {
			if _, ok := parseRequestTopic(base); ok {
				return true
			}
		}
	}
	return false
}

// handle runs one request with any injected fault and answers the
// requester through r, which hides whether the request came through the
// embedded broker or an attached one.
func (s *Server) handle(r responder, p Principal, req request, payload []byte) {
	log := s.log.With("op", req.Op, "client", r.clientID(), "certificateId", p.CertificateID)
	c := codecs[req.Format]
	if !s.limiter.allow(r.connection(), s.now()) || !s.account.allowOperation(req.Op, s.now()) {
		// Checked before faults and work, as a throttled request never
		// reaches the service behind AWS's front door.
		s.answer(r, req, c, nil, reject(429, CodeThrottling, "Rate exceeded."))
		return
	}
	if len(payload) > MaxPayloadSize {
		// AWS IoT refuses a message over its payload quota before any
		// service sees it; the embedded broker's packet limit leaves a
		// margin for topic and properties, so it is checked here too.
		s.answer(r, req, c, nil, reject(400, CodeInvalidPayload, "Payload of %d bytes is over the %d-byte limit.", len(payload), MaxPayloadSize))
		return
	}
	f, faulty := s.faults.next(req.Op)
	if faulty {
		log.Info("injecting fault", "fault", f.String())
		switch f.Action {
		case FaultReject:
			s.answer(r, req, c, nil, &Rejection{StatusCode: f.Status, ErrorCode: f.Code,
				ErrorMessage: fmt.Sprintf("Injected fault: %s answered %d %s by the cloud emulator.", req.Op, f.Status, f.Code)})
			return
		case FaultDrop:
			if !f.AfterEffect {
				return
			}
		case FaultDisconnect:
			if !f.AfterEffect {
				r.disconnect(errors.New("injected fault: disconnect"))
				return
			}
		}
	}

	var accepted any
	var rej *Rejection
	switch req.Op {
	case OpCreateCertificateFromCsr:
		accepted, rej = s.createCertificateFromCsr(log, c, payload)
	case OpCreateKeysAndCertificate:
		accepted, rej = s.createKeysAndCertificate(log, c, payload)
	case OpRegisterThing:
		accepted, rej = s.registerThing(log, c, req.Template, payload, requester{ClientID: r.clientID(), ClaimCertificateID: p.CertificateID})
	}

	if faulty {
		switch f.Action {
		case FaultDelay:
			select {
			case <-time.After(f.Delay):
			case <-s.closing:
				return
			}
		case FaultDrop:
			log.Info("answer dropped by fault")
			return
		case FaultDisconnect:
			r.disconnect(errors.New("injected fault: disconnect"))
			return
		}
	}
	s.answer(r, req, c, accepted, rej)
}

// answer encodes the answer in the request's format and sends it on the
// request topic's /accepted or /rejected.
func (s *Server) answer(r responder, req request, c codec, accepted any, rej *Rejection) {
	topic, body := req.Topic+"/accepted", accepted
	if rej != nil {
		topic, body = req.Topic+"/rejected", any(rej)
		s.log.Info("request rejected", "op", req.Op, "client", r.clientID(), "statusCode", rej.StatusCode, "errorCode", rej.ErrorCode, "errorMessage", rej.ErrorMessage)
	}
	b, err := c.encode(body)
	if err != nil {
		s.log.Error("encode answer", "op", req.Op, "error", err)
		return
	}
	r.respond(topic, b)
}

// commit runs mutate on copies of what it touches (regTx) and, unless it
// rejects, puts the change into the registry and logs it. It returns once
// the change is durable, so no answer goes out for a change a crash could
// lose. The registry lock is held only while mutate runs: CONNECTs and
// policy checks never wait on the disk, and the changes of requests that
// arrive meanwhile share the next fsync (group commit).
func (s *Server) commit(mutate func(tx *regTx) *Rejection) *Rejection {
	s.mu.Lock()
	if s.saveErr != nil {
		s.mu.Unlock()
		return reject(500, CodeInternalFailure, "Internal failure: the emulator could not save its registry.")
	}
	tx := newTx(s.reg)
	s.sweepLocked(tx)
	if rej := mutate(tx); rej != nil {
		// Expired certificates are deleted whatever the answer.
		tx = s.sweepOnly(tx)
		if tx.empty() {
			s.mu.Unlock()
			return rej
		}
		if err := s.persist(tx); err != nil {
			s.log.Error("registry not saved", "error", err)
		}
		return rej
	}
	if tx.empty() {
		s.mu.Unlock()
		return nil
	}
	err := s.persist(tx)
	if err != nil {
		s.log.Error("registry not saved", "error", err)
		return reject(500, CodeInternalFailure, "Internal failure: the emulator could not save its registry.")
	}
	return nil
}

// persist applies tx and waits for it to be logged. It is called with s.mu
// held and releases it: the change is queued for the log in the order it
// is applied, so a later change is never durable before an earlier one.
func (s *Server) persist(tx *regTx) error {
	recs := tx.records()
	tx.apply()
	var done <-chan error
	if s.regLog != nil {
		done = s.regLog.append(recs)
		s.maybeCompactLocked()
	}
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	if err := <-done; err != nil {
		s.mu.Lock()
		if s.saveErr == nil {
			// What is in memory can no longer be made durable: refuse
			// every further change rather than acknowledge one a
			// restart would lose.
			s.saveErr = err
		}
		s.mu.Unlock()
		return err
	}
	return nil
}

// sweepLocked deletes, within tx, certificates never activated whose
// ownership token has expired, as AWS IoT does, so a device that gave up
// half-way leaves no pending certificate behind forever. It looks only at
// the oldest pending ones, in the order issued. s.mu must be held.
func (s *Server) sweepLocked(tx *regTx) {
	now := s.now()
	for len(s.pendingQ) > 0 && now.Sub(s.pendingQ[0].created) > s.lifetime {
		id := s.pendingQ[0].id
		s.pendingQ = s.pendingQ[1:]
		if c, ok := tx.r.Certificates[id]; ok && c.Status == StatusPendingActivation && !c.Claim {
			tx.deleteCert(id)
			tx.swept = append(tx.swept, id)
		}
	}
}

// sweepOnly keeps, of a rejected tx, only the deletions the sweep made.
func (s *Server) sweepOnly(tx *regTx) *regTx {
	out := newTx(tx.r)
	for _, id := range tx.swept {
		out.deleteCert(id)
	}
	return out
}

func (s *Server) createCertificateFromCsr(log *slog.Logger, c codec, payload []byte) (any, *Rejection) {
	var req createFromCsrRequest
	if err := c.decode(payload, &req); err != nil {
		return nil, reject(400, CodeInvalidPayload, "Invalid request payload: %v", err)
	}
	if strings.TrimSpace(req.CSR) == "" {
		return nil, reject(400, CodeInvalidPayload, "Certificate signing request cannot be empty.")
	}
	csr, err := parseCSR(req.CSR)
	if err != nil {
		return nil, reject(400, CodeInvalidPayload, "Invalid certificate signing request: %s.", strings.TrimPrefix(err.Error(), errBadCSR.Error()+": "))
	}
	pc, rej := s.issuePending(csr.PublicKey, csr.Subject, func(err error) *Rejection {
		return reject(400, CodeInvalidPayload, "Invalid certificate signing request: %v.", err)
	})
	if rej != nil {
		return nil, rej
	}
	log.Info("certificate created", "newCertificateId", pc.id)
	return createFromCsrAccepted{CertificateID: pc.id, CertificatePEM: pc.pem, Token: pc.token}, nil
}

// pendingCertificate is a certificate just issued, with its token.
type pendingCertificate struct{ id, pem, token string }

// issuePending signs a certificate for pub, records it PENDING_ACTIVATION
// with a new ownership token, and returns both. Both certificate flows end
// here, so RegisterThing cannot tell them apart. signErr maps a signing
// failure to the flow's own rejection.
func (s *Server) issuePending(pub crypto.PublicKey, subject pkix.Name, signErr func(error) *Rejection) (pendingCertificate, *Rejection) {
	now := s.now()
	der, err := s.ca.issueDER(pub, subject, nil, now.Add(-5*time.Minute), deviceCertNotAfter)
	if err != nil {
		return pendingCertificate{}, signErr(err)
	}
	token, err := newToken()
	if err != nil {
		return pendingCertificate{}, reject(500, CodeInternalFailure, "Internal failure: %v", err)
	}
	pc := pendingCertificate{id: CertificateID(der), pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), token: token}
	rej := s.commit(func(tx *regTx) *Rejection {
		tx.putCert(&Certificate{ID: pc.id, Status: StatusPendingActivation, Policies: []string{}, CreatedAt: now.UTC(), PEM: pc.pem})
		tx.putToken(token, &Token{CertificateID: pc.id, IssuedAt: now.UTC()})
		s.pendingQ = append(s.pendingQ, pendingRef{id: pc.id, created: now})
		return nil
	})
	return pc, rej
}

// newToken makes an ownership token: 256 random bits, hex, well inside the
// 512 bytes embedded clients reserve for one.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// registerThing evaluates in the order the reference gives: template exists
// and is enabled; token valid; hook; overrides merged, then defaults;
// missing parameters; functions; resources (OverrideSettings); certificate
// activated and attached; answer.
func (s *Server) registerThing(log *slog.Logger, c codec, templateName string, payload []byte, from requester) (any, *Rejection) {
	var req registerThingRequest
	if err := c.decode(payload, &req); err != nil {
		return nil, reject(400, CodeInvalidPayload, "Invalid request payload: %v", err)
	}
	tmpl, ok := s.templates[templateName]
	if !ok {
		return nil, reject(404, CodeResourceNotFound, "Template %s not found.", templateName)
	}
	if !tmpl.settings.Enabled {
		// The template exists (not 404) and the request is well formed
		// (not 400): a disabled template refuses every caller.
		return nil, reject(403, CodeAccessDenied, "Template %s is disabled.", templateName)
	}
	if req.Token == "" {
		return nil, reject(400, CodeInvalidCertificateOwnershipToken, "Certificate ownership token cannot be empty.")
	}
	reqParams, preRej := s.preProvision(log, tmpl, req.Token, req.Parameters, from)
	if preRej != nil {
		return nil, preRej
	}
	var out *registerThingAccepted
	rej := s.commit(func(tx *regTx) *Rejection {
		tok, ok := tx.token(req.Token)
		if !ok {
			return reject(400, CodeInvalidCertificateOwnershipToken, "Certificate ownership token is invalid.")
		}
		if s.now().Sub(tok.IssuedAt) > s.lifetime {
			return reject(400, CodeInvalidCertificateOwnershipToken, "Certificate ownership token has expired.")
		}
		cert, ok := tx.cert(tok.CertificateID)
		if !ok {
			return reject(400, CodeInvalidCertificateOwnershipToken, "Certificate ownership token is invalid: its certificate no longer exists.")
		}
		if tok.UsedAt != nil {
			if s.singleUseTokens {
				return reject(400, CodeInvalidCertificateOwnershipToken, "Certificate ownership token has already been used.")
			}
			// By default a device that lost power after RegisterThing
			// repeats it with the same token and gets the thing it
			// already has: AWS does not document a second use, and
			// refusing it would strand that device with a certificate it
			// cannot activate.
			out = &registerThingAccepted{ThingName: tok.ThingName, DeviceConfiguration: maps.Clone(tok.DeviceConfiguration)}
			return nil
		}
		params := maps.Clone(reqParams)
		if params == nil {
			params = map[string]string{}
		}
		params[ParamCertificateID] = cert.ID
		ev, err := tmpl.Evaluate(params, map[string]string{"AWS::Region": s.st.Region, "AWS::AccountId": s.st.AccountID})
		if err != nil {
			var pe *ParameterError
			if errors.As(err, &pe) {
				return reject(400, CodeInvalidParameters, "%s", pe.Msg)
			}
			return reject(400, CodeInvalidParameters, "Template %s: %v.", templateName, err)
		}
		if rej := s.apply(tx, ev, cert); rej != nil {
			return rej
		}
		now := s.now().UTC()
		tok.UsedAt = &now
		if ev.Thing != nil {
			tok.ThingName = ev.Thing.Name
		}
		tok.DeviceConfiguration = ev.DeviceConfiguration
		out = &registerThingAccepted{ThingName: tok.ThingName, DeviceConfiguration: maps.Clone(ev.DeviceConfiguration)}
		return nil
	})
	if rej != nil {
		return nil, rej
	}
	if out.DeviceConfiguration == nil {
		out.DeviceConfiguration = map[string]string{}
	}
	log.Info("thing registered", "thingName", out.ThingName, "template", templateName)
	return out, nil
}

// OverrideSettings values.
const (
	overrideDoNothing = "DO_NOTHING"
	overrideReplace   = "REPLACE"
	overrideFail      = "FAIL"
	overrideMerge     = "MERGE"
)

// apply creates or updates the template's resources in the registry.
func (s *Server) apply(tx *regTx, ev *Evaluation, cert *Certificate) *Rejection {
	if rej := checkCertificateResource(ev.Certificate, cert); rej != nil {
		return rej
	}
	for _, p := range ev.Policies {
		if p.Document != nil {
			tx.putPolicy(p.Name, p.Document)
		} else if !s.policies[p.Name] {
			if !tx.policy(p.Name) {
				return reject(404, CodeResourceNotFound, "Policy %s not found.", p.Name)
			}
		}
		cert.Policies = addUnique(cert.Policies, p.Name)
	}
	if t := ev.Thing; t != nil {
		thing, exists := tx.thing(t.Name)
		if !exists {
			thing = &Thing{Name: t.Name, Attributes: t.Attributes, Groups: t.Groups, ThingTypeName: t.ThingTypeName,
				BillingGroup: t.BillingGroup, Principals: []string{}, CreatedAt: s.now().UTC()}
			if thing.Groups == nil {
				thing.Groups = []string{}
			}
			tx.putThing(thing)
		} else if rej := override(thing, t); rej != nil {
			return rej
		}
		thing.Principals = addUnique(thing.Principals, cert.ID)
		cert.ThingName = t.Name
	}
	if ev.Certificate != nil {
		cert.Status = ev.Certificate.Status
		if cert.ThingName != "" {
			cert.ThingPrincipalType = ev.Certificate.PrincipalType
		}
	}
	return nil
}

// override updates an existing thing as the template's OverrideSettings
// say; a property without a setting is left alone (DO_NOTHING).
func override(thing *Thing, t *ThingSpec) *Rejection {
	conflict := func(prop string) *Rejection {
		return reject(409, CodeResourceConflict, "Thing %s exists and its %s differs; the template's OverrideSettings say FAIL.", thing.Name, prop)
	}
	switch t.Overrides["AttributePayload"] {
	case overrideReplace:
		thing.Attributes = t.Attributes
	case overrideMerge:
		if thing.Attributes == nil {
			thing.Attributes = map[string]string{}
		}
		maps.Copy(thing.Attributes, t.Attributes)
	case overrideFail:
		if !maps.Equal(thing.Attributes, t.Attributes) {
			return conflict("AttributePayload")
		}
	}
	switch t.Overrides["ThingGroups"] {
	case overrideReplace:
		thing.Groups = append([]string{}, t.Groups...)
	case overrideMerge:
		for _, g := range t.Groups {
			thing.Groups = addUnique(thing.Groups, g)
		}
	case overrideFail:
		a, b := slices.Sorted(slices.Values(thing.Groups)), slices.Sorted(slices.Values(t.Groups))
		if !slices.Equal(a, b) {
			return conflict("ThingGroups")
		}
	}
	for prop, pair := range map[string][2]*string{
		"ThingTypeName": {&thing.ThingTypeName, &t.ThingTypeName},
		"BillingGroup":  {&thing.BillingGroup, &t.BillingGroup},
	} {
		switch t.Overrides[prop] {
		case overrideReplace, overrideMerge:
			*pair[0] = *pair[1]
		case overrideFail:
			if *pair[0] != *pair[1] {
				return conflict(prop)
			}
		}
	}
	return nil
}
