package paramsource

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"strings"
	"unicode/utf8"
)

// AWS IoT's limits for a template parameter, in characters: a value past
// them is refused by RegisterThing, after a certificate was issued.
const (
	MaxNameLength  = 2048
	MaxValueLength = 4096
)

// DeriveRequest is one provisioning identity's parameters to work out.
type DeriveRequest struct {
	TemplateName string
	// Literal are the templateParams written as plain values.
	Literal map[string]string
	// Specs are the templateParams that name a source.
	Specs []Spec
	// Host is the device the built-ins read; nil is the real one.
	Host *Host
	// Plugins finds plugin:NAME sources; nil knows none.
	Plugins PluginLookup
}

// Derived is the outcome of Derive.
type Derived struct {
	// Params is every template parameter: the literal ones and the
	// derived ones, as RegisterThing sends them.
	Params map[string]string
	// From names, for each derived parameter, the source it came from
	// (Spec.String), so status and config check can show it.
	From map[string]string
}

// Derive runs the sources over the literal parameters, in the order of the
// parameters' names, each seeing what the ones before it gave. A source
// must give a value for its own parameter; it may give others too (a
// plugin reading several fields of an EEPROM), which are added or replace
// what was there. Any error, and any empty value, stops it: the message
// names the parameter and the source. Errors keep their class (a plugin's
// transient failure stays transient).
func Derive(ctx context.Context, req *DeriveRequest) (*Derived, error) {
	out := &Derived{Params: maps.Clone(req.Literal), From: map[string]string{}}
	if out.Params == nil {
		out.Params = map[string]string{}
	}
	specs := append([]Spec(nil), req.Specs...)
	sort.Slice(specs, func(i, j int) bool { return specs[i].Param < specs[j].Param })
	for _, s := range specs {
		where := fmt.Sprintf("templateParams.%s (source %s)", s.Param, s.Source)
		src, err := s.Open(req.Host, req.Plugins)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		res, err := src.Params(ctx, &ParamsRequest{TemplateName: req.TemplateName, Params: maps.Clone(out.Params)})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		var got map[string]string
		if res != nil {
			got = res.Params
		}
		if _, ok := got[s.Param]; !ok {
			return nil, fmt.Errorf("%s: the source gave no value for %s", where, s.Param)
		}
		for _, k := range sortedKeys(got) {
			if strings.TrimSpace(got[k]) == "" {
				return nil, fmt.Errorf("%s: the derived value of %s is empty", where, k)
			}
			if n := utf8.RuneCountInString(k); n > MaxNameLength {
				return nil, fmt.Errorf("%s: the source gave a parameter name %d characters long; AWS IoT accepts names of at most %d", where, n, MaxNameLength)
			}
			if n := utf8.RuneCountInString(got[k]); n > MaxValueLength {
				return nil, fmt.Errorf("%s: the derived value of %s is %d characters long; AWS IoT accepts values of at most %d: make the source give a shorter one", where, k, n, MaxValueLength)
			}
			out.Params[k] = got[k]
			out.From[k] = s.String()
		}
	}
	return out, nil
}
