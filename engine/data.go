package engine

import (
	"encoding/json"
	"fmt"
	"maps"
	"time"
)

// Data is what one state hands the next, journaled with every transition so
// that a run killed at any point can continue. It never holds a private key:
// keys stay in the KeyStore and only their URI is recorded. It does hold the
// ownership token, which is why the journal file is 0600.
type Data struct {
	// NewKey is set while a provisioning that began afresh (no journal,
	// or --force) has not made its key yet: a key found at the key path
	// then predates it and must be set aside, even when the run that
	// began it was killed and this one resumes.
	NewKey       bool   `json:"newKey,omitempty"`
	KeyURI       string `json:"keyUri,omitempty"`
	KeyAlgorithm string `json:"keyAlgorithm,omitempty"`
	CSRPEM       string `json:"csrPem,omitempty"`

	CertificateID  string    `json:"certificateId,omitempty"`
	CertificatePEM string    `json:"certificatePem,omitempty"`
	OwnershipToken string    `json:"certificateOwnershipToken,omitempty"`
	TokenIssuedAt  time.Time `json:"tokenIssuedAt,omitzero"`

	// PriorCertificateID and PriorCertificatePEM are a certificate given
	// up on after its RegisterThing may have reached the cloud (its token
	// grew too old, or the cloud refused it): the cloud may have
	// activated it without the device hearing so. CreateCertificate makes
	// sure it is not ACTIVE before asking for another, so that one device
	// never holds two ACTIVE certificates.
	PriorCertificateID  string `json:"priorCertificateId,omitempty"`
	PriorCertificatePEM string `json:"priorCertificatePem,omitempty"`

	// TemplateParams are all the template parameters, literal and
	// derived, as RegisterThing sends them: derived once per provisioning
	// identity, so a resumed run sends the values of its first try.
	TemplateParams map[string]string `json:"templateParams,omitempty"`
	// ParamSources names, for each derived parameter, its source.
	ParamSources map[string]string `json:"paramSources,omitempty"`

	TemplateName        string            `json:"templateName,omitempty"`
	ThingName           string            `json:"thingName,omitempty"`
	DeviceConfiguration map[string]string `json:"deviceConfiguration,omitempty"`

	// VerifiedAt is when Verify connected with the new certificate and
	// key, client id = ThingName; zero before, or with verify off.
	VerifiedAt time.Time `json:"verifiedAt,omitzero"`
	// ClaimRetired lists the claim files Verify deleted (overwritten,
	// then unlinked) once the new identity connected: retireClaim.
	ClaimRetired []string `json:"claimRetired,omitempty"`

	// Files lists what Persist wrote, so that status can show it and reset
	// can keep backups of it.
	Files []string `json:"files,omitempty"`

	// Ext is the journaled data of steps outside the built-in machine (a
	// vendor's own), each under a key of its own: the step's name, by
	// convention. Use Put and Get.
	Ext map[string]json.RawMessage `json:"ext,omitempty"`
}

// Put stores v (as JSON) under key; it is journaled with the next record,
// so a resumed run finds it. Like everything in Data it must not be a
// private key.
func (d *Data) Put(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("journal data %q: %w", key, err)
	}
	// Copied on write: records already journaled share the old map.
	ext := maps.Clone(d.Ext)
	if ext == nil {
		ext = map[string]json.RawMessage{}
	}
	ext[key] = b
	d.Ext = ext
	return nil
}

// Get reads what Put stored under key into v, and reports whether there
// was anything.
func (d *Data) Get(key string, v any) (bool, error) {
	b, ok := d.Ext[key]
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return true, fmt.Errorf("journal data %q: %w", key, err)
	}
	return true, nil
}

// TokenAge is how long ago the ownership token was issued, or 0 if there is
// none.
func (d *Data) TokenAge(now time.Time) time.Duration {
	if d.OwnershipToken == "" || d.TokenIssuedAt.IsZero() {
		return 0
	}
	return now.Sub(d.TokenIssuedAt)
}

// ForgetCertificate drops a certificate whose token can no longer be used.
// Its RegisterThing may have gone through unseen, so it is kept as the
// prior certificate, to be checked before another is asked for.
func (d *Data) ForgetCertificate() {
	if d.CertificatePEM != "" {
		d.PriorCertificateID, d.PriorCertificatePEM = d.CertificateID, d.CertificatePEM
	}
	d.CertificateID, d.CertificatePEM, d.OwnershipToken = "", "", ""
	d.TokenIssuedAt = time.Time{}
}
