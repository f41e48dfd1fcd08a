// Package paramsourcetest is the conformance suite for the ParamSource
// boundary: Echo is a source with fully specified answers, and Run checks
// that a ParamSource (Echo itself in-process, or Echo served by a plugin)
// gives exactly those answers.
package paramsourcetest

import (
	"context"
	"errors"
	"maps"
	"strconv"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// Echo answers with TemplateName=<the template>, Count=<number of
// parameters given> and, for every parameter K given, Seen_K=<its value>.
// Template "fail" makes it fail; "busy" makes it fail transiently.
type Echo struct{}

var _ paramsource.ParamSource = Echo{}

func (Echo) Params(_ context.Context, req *paramsource.ParamsRequest) (*paramsource.ParamsResponse, error) {
	switch req.TemplateName {
	case "fail":
		return nil, errors.New("echo: template fail always fails")
	case "busy":
		return nil, failure.Transient(errors.New("echo: busy, try later"))
	}
	out := map[string]string{"TemplateName": req.TemplateName, "Count": strconv.Itoa(len(req.Params))}
	for k, v := range req.Params {
		out["Seen_"+k] = v
	}
	return &paramsource.ParamsResponse{Params: out}, nil
}

// Run checks that src answers as Echo does.
func Run(t *testing.T, src paramsource.ParamSource) {
	ctx := context.Background()
	t.Run("answers from the template and the parameters so far", func(t *testing.T) {
		in := map[string]string{"SerialNumber": "SN-1", "Empty": "", "Unicode": "ä ✓"}
		given := maps.Clone(in)
		res, err := src.Params(ctx, &paramsource.ParamsRequest{TemplateName: "tmpl", Params: in})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"TemplateName": "tmpl", "Count": "3", "Seen_SerialNumber": "SN-1", "Seen_Empty": "", "Seen_Unicode": "ä ✓"}
		if !maps.Equal(res.Params, want) {
			t.Errorf("Params = %v, want %v", res.Params, want)
		}
		if !maps.Equal(in, given) {
			t.Errorf("the source changed the request's parameters: %v, was %v", in, given)
		}
	})
	t.Run("no parameters so far", func(t *testing.T) {
		res, err := src.Params(ctx, &paramsource.ParamsRequest{TemplateName: "tmpl"})
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]string{"TemplateName": "tmpl", "Count": "0"}; !maps.Equal(res.Params, want) {
			t.Errorf("Params = %v, want %v", res.Params, want)
		}
	})
	t.Run("an error keeps its message and is fatal", func(t *testing.T) {
		_, err := src.Params(ctx, &paramsource.ParamsRequest{TemplateName: "fail"})
		if err == nil || !strings.Contains(err.Error(), "echo: template fail always fails") {
			t.Fatalf("error = %v, want one saying the template fails", err)
		}
		if failure.IsTransient(err) {
			t.Errorf("error %v is transient, want fatal", err)
		}
	})
	t.Run("a transient error stays transient", func(t *testing.T) {
		_, err := src.Params(ctx, &paramsource.ParamsRequest{TemplateName: "busy"})
		if err == nil || !strings.Contains(err.Error(), "echo: busy, try later") || !failure.IsTransient(err) {
			t.Fatalf("error = %v, want a transient one saying busy", err)
		}
	})
}
