package cloudsim

import (
	"encoding/json"
	"maps"
	"slices"
	"time"
)

// regTx is one change to the registry, made on copies of the entities it
// touches. The registry itself changes only when the change is accepted,
// so a rejected request leaves no trace without a backup of the whole
// registry; and an entity, once in the registry, is never modified, so a
// reader holding it (a policy check) needs no lock. A nil entry is a
// deletion.
type regTx struct {
	r        *Registry
	things   map[string]*Thing
	certs    map[string]*Certificate
	tokens   map[string]*Token
	policies map[string]json.RawMessage
	swept    []string // certificates the sweep deleted
}

func newTx(r *Registry) *regTx {
	return &regTx{r: r, things: map[string]*Thing{}, certs: map[string]*Certificate{},
		tokens: map[string]*Token{}, policies: map[string]json.RawMessage{}}
}

// thing returns a copy of the named thing to change, if it exists.
func (tx *regTx) thing(name string) (*Thing, bool) {
	if t, ok := tx.things[name]; ok {
		return t, t != nil
	}
	t, ok := tx.r.Things[name]
	if !ok {
		return nil, false
	}
	c := t.clone()
	tx.things[name] = c
	return c, true
}

func (tx *regTx) putThing(t *Thing) { tx.things[t.Name] = t }

// cert returns a copy of the certificate to change, if it exists.
func (tx *regTx) cert(id string) (*Certificate, bool) {
	if c, ok := tx.certs[id]; ok {
		return c, c != nil
	}
	c, ok := tx.r.Certificates[id]
	if !ok {
		return nil, false
	}
	cc := c.clone()
	tx.certs[id] = cc
	return cc, true
}

func (tx *regTx) putCert(c *Certificate) { tx.certs[c.ID] = c }
func (tx *regTx) deleteCert(id string)   { tx.certs[id] = nil }

// token returns a copy of the token's record to change, if it exists.
func (tx *regTx) token(tok string) (*Token, bool) {
	if t, ok := tx.tokens[tok]; ok {
		return t, t != nil
	}
	t, ok := tx.r.Tokens[tok]
	if !ok {
		return nil, false
	}
	c := t.clone()
	tx.tokens[tok] = c
	return c, true
}

func (tx *regTx) putToken(tok string, t *Token) { tx.tokens[tok] = t }

// policy reports whether the registry holds the named inline policy.
func (tx *regTx) policy(name string) bool {
	if p, ok := tx.policies[name]; ok {
		return p != nil
	}
	_, ok := tx.r.Policies[name]
	return ok
}

func (tx *regTx) putPolicy(name string, doc json.RawMessage) { tx.policies[name] = doc }

func (tx *regTx) empty() bool {
	return len(tx.things)+len(tx.certs)+len(tx.tokens)+len(tx.policies) == 0
}

// records are the log records that make the change durable. They share
// the entities the change puts into the registry, which are never
// modified once there.
func (tx *regTx) records() []logRecord {
	recs := make([]logRecord, 0, len(tx.things)+len(tx.certs)+len(tx.tokens)+len(tx.policies))
	// Sorted, so that the log reads the same for the same change.
	for _, k := range slices.Sorted(maps.Keys(tx.certs)) {
		recs = append(recs, logRecord{Kind: kindCert, Key: k, Cert: tx.certs[k]})
	}
	for _, k := range slices.Sorted(maps.Keys(tx.tokens)) {
		recs = append(recs, logRecord{Kind: kindToken, Key: k, Token: tx.tokens[k]})
	}
	for _, k := range slices.Sorted(maps.Keys(tx.things)) {
		recs = append(recs, logRecord{Kind: kindThing, Key: k, Thing: tx.things[k]})
	}
	for _, k := range slices.Sorted(maps.Keys(tx.policies)) {
		recs = append(recs, logRecord{Kind: kindPolicy, Key: k, Policy: tx.policies[k]})
	}
	return recs
}

// apply puts the change into the registry.
func (tx *regTx) apply() {
	for k, v := range tx.things {
		if v == nil {
			delete(tx.r.Things, k)
		} else {
			tx.r.Things[k] = v
		}
	}
	for k, v := range tx.certs {
		if v == nil {
			delete(tx.r.Certificates, k)
		} else {
			tx.r.Certificates[k] = v
		}
	}
	for k, v := range tx.tokens {
		if v == nil {
			delete(tx.r.Tokens, k)
		} else {
			tx.r.Tokens[k] = v
		}
	}
	for k, v := range tx.policies {
		if v == nil {
			delete(tx.r.Policies, k)
		} else {
			tx.r.Policies[k] = v
		}
	}
}

func (t *Thing) clone() *Thing {
	c := *t
	c.Attributes = maps.Clone(t.Attributes)
	c.Groups = slices.Clone(t.Groups)
	c.Principals = slices.Clone(t.Principals)
	return &c
}

func (c *Certificate) clone() *Certificate {
	cc := *c
	cc.Policies = slices.Clone(c.Policies)
	return &cc
}

func (t *Token) clone() *Token {
	c := *t
	if t.UsedAt != nil {
		u := *t.UsedAt
		c.UsedAt = &u
	}
	c.DeviceConfiguration = maps.Clone(t.DeviceConfiguration)
	return &c
}

// pendingRef is a certificate waiting for activation, in the order issued,
// so expired ones are found without scanning the registry.
type pendingRef struct {
	id      string
	created time.Time
}
