package cloudsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/fleetprov/fleetprov/atomicfile"
)

// Certificate statuses, spelled as AWS IoT spells them.
const (
	StatusActive            = "ACTIVE"
	StatusInactive          = "INACTIVE"
	StatusPendingActivation = "PENDING_ACTIVATION"
	StatusRevoked           = "REVOKED"
)

// Registry is the emulator's record of the cloud: what `aws iot
// list-things` and `list-certificates` would show. On disk it is a
// snapshot and a log of the changes since (see reglog.go); ReadRegistry
// reads both, so a reader in another process sees every acknowledged
// change.
type Registry struct {
	// Generation counts compactions: the log holds the changes made
	// since the snapshot of its own generation.
	Generation   int64                      `json:"generation"`
	Things       map[string]*Thing          `json:"things"`
	Certificates map[string]*Certificate    `json:"certificates"`
	Tokens       map[string]*Token          `json:"tokens"`
	Policies     map[string]json.RawMessage `json:"policies,omitempty"` // inline policies created by templates

	// logRecords counts the log records read on top of the snapshot.
	logRecords int
	// legacy: the snapshot or the log was of the earlier JSON format,
	// which a start rewrites, so that nothing is appended to a JSON log.
	legacy bool
	// logEnd is the length of registry.log up to its last whole record
	// when it is the log of this registry's generation and was applied;
	// otherwise -1. A start appends to such a log after cutting off a
	// torn tail, instead of folding it into a new snapshot first.
	logEnd int64
}

// Thing is a registered IoT thing.
type Thing struct {
	Name          string            `json:"thingName"`
	Attributes    map[string]string `json:"attributes"`
	Groups        []string          `json:"groups"`
	ThingTypeName string            `json:"thingTypeName,omitempty"`
	BillingGroup  string            `json:"billingGroup,omitempty"`
	Principals    []string          `json:"principals"` // certificate ids attached
	CreatedAt     time.Time         `json:"createdAt"`
}

// Certificate is a certificate the emulator issued (or the claim).
type Certificate struct {
	ID        string `json:"certificateId"`
	Status    string `json:"status"`
	ThingName string `json:"thingName,omitempty"`
	// ThingPrincipalType is how the certificate is attached to ThingName:
	// EXCLUSIVE_THING or NON_EXCLUSIVE_THING (the template's choice).
	ThingPrincipalType string    `json:"thingPrincipalType,omitempty"`
	Policies           []string  `json:"policies"`
	CreatedAt          time.Time `json:"createdAt"`
	Claim              bool      `json:"claim"`
	PEM                string    `json:"certificatePem"`
}

// Token is a certificate ownership token. Used tokens keep the answer they
// produced so a repeated RegisterThing gets the same thing back.
type Token struct {
	CertificateID       string            `json:"certificateId"`
	IssuedAt            time.Time         `json:"issuedAt"`
	UsedAt              *time.Time        `json:"usedAt,omitempty"`
	ThingName           string            `json:"thingName,omitempty"`
	DeviceConfiguration map[string]string `json:"deviceConfiguration,omitempty"`
}

func newRegistry() *Registry {
	return &Registry{
		logEnd:       -1,
		Things:       map[string]*Thing{},
		Certificates: map[string]*Certificate{},
		Tokens:       map[string]*Token{},
		Policies:     map[string]json.RawMessage{},
	}
}

// ReadRegistry loads the registry of the emulator directory dir: its
// snapshot and the changes logged since. It is safe while `cloud serve`
// runs in another process: both files are replaced only by rename, and the
// log only grows by appends, of which a torn last one is ignored.
func ReadRegistry(dir string) (*Registry, error) {
	var err error
	for range 10 {
		var r *Registry
		var again bool
		if r, err = readSnapshot(dir); err != nil {
			return nil, err
		}
		if again, err = readLogs(dir, r); err != nil {
			return nil, err
		}
		if again {
			// A compaction ran between the reads: read again.
			err = fmt.Errorf("%s: registry changed while being read", dir)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		return r, nil
	}
	return nil, err
}

func readSnapshot(dir string) (*Registry, error) {
	path := filepath.Join(dir, fileRegistry)
	r := newRegistry()
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := regDec.Unmarshal(b, r); err != nil {
			return nil, fmt.Errorf("%s: corrupt registry: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
		// A directory of an earlier version has a JSON snapshot instead.
		legacy := filepath.Join(dir, fileRegistryJSON)
		b, lerr := os.ReadFile(legacy)
		if errors.Is(lerr, os.ErrNotExist) {
			return nil, fmt.Errorf("%s not found: %s is %w; run `fleetprov cloud init --dir %s` first", path, dir, ErrNotInitialised, dir)
		}
		if lerr != nil {
			return nil, fmt.Errorf("read registry: %w", lerr)
		}
		if err := json.Unmarshal(b, r); err != nil {
			return nil, fmt.Errorf("%s: corrupt registry: %w", legacy, err)
		}
		r.legacy = true
	default:
		return nil, fmt.Errorf("read registry: %w", err)
	}
	// A registry written by hand or by an older emulator may lack a map.
	if r.Things == nil {
		r.Things = map[string]*Thing{}
	}
	if r.Certificates == nil {
		r.Certificates = map[string]*Certificate{}
	}
	if r.Tokens == nil {
		r.Tokens = map[string]*Token{}
	}
	if r.Policies == nil {
		r.Policies = map[string]json.RawMessage{}
	}
	return r, nil
}

func writeSnapshot(dir string, r *Registry) error {
	b, err := regEnc.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode registry: %w", err)
	}
	// 0600: the registry holds ownership tokens, which are credentials for
	// as long as they live.
	if err := atomicfile.WriteFile(filepath.Join(dir, fileRegistry), b, 0o600); err != nil {
		return fmt.Errorf("save registry: %w", err)
	}
	// The snapshot of an earlier version is superseded (and still holds
	// tokens): remove it once the new one is durable.
	if err := os.Remove(filepath.Join(dir, fileRegistryJSON)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the superseded registry: %w", err)
	}
	return nil
}

// SortedThings returns the things ordered by name, for stable listings.
func (r *Registry) SortedThings() []*Thing {
	out := make([]*Thing, 0, len(r.Things))
	for _, t := range r.Things {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SortedCertificates returns the certificates ordered by creation time (then
// id), so the claim comes first and device certificates follow in order.
func (r *Registry) SortedCertificates() []*Certificate {
	out := make([]*Certificate, 0, len(r.Certificates))
	for _, c := range r.Certificates {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func addUnique(list []string, v string) []string {
	if slices.Contains(list, v) {
		return list
	}
	return append(list, v)
}
