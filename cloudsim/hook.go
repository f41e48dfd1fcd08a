package cloudsim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os/exec"
	"strings"
	"time"

	"github.com/fleetprov/fleetprov/internal/procgroup"
)

// hookInput is the Lambda event AWS sends a pre-provisioning hook
// (developerguide/pre-provisioning-hook.md), spelled here from the docs.
type hookInput struct {
	ClaimCertificateID string            `json:"claimCertificateId"`
	CertificateID      string            `json:"certificateId"`
	CertificatePEM     string            `json:"certificatePem"`
	TemplateARN        string            `json:"templateArn"`
	ClientID           string            `json:"clientId"`
	Parameters         map[string]string `json:"parameters"`
}

// hookOutput is what the hook answers. allowProvisioning is a pointer so
// that an answer without it is told apart from an explicit false; both
// deny, but the log says which.
type hookOutput struct {
	AllowProvisioning  *bool             `json:"allowProvisioning"`
	ParameterOverrides map[string]string `json:"parameterOverrides"`
}

// Reasons a hook denies; the device sees one AccessDeniedException for all
// of them (AWS does not pass a Lambda's failure to the device), the
// emulator's log sees which.
var (
	errHookDenied  = errors.New("the hook did not answer allowProvisioning: true")
	errHookTimeout = errors.New("the hook did not answer in time")
	errHookAnswer  = errors.New("the hook's answer is not the pre-provisioning hook output JSON")
)

// requester is who sent a RegisterThing, as the hook's input names it.
type requester struct {
	ClientID           string
	ClaimCertificateID string
}

func (h *HookSettings) target() string {
	if h.URL != "" {
		return h.URL
	}
	return strings.Join(h.Command, " ")
}

// call runs the hook once and returns its parameter overrides, or why it
// denied. ctx bounds the whole call, process start included.
func (h *HookSettings) call(ctx context.Context, in hookInput) (map[string]string, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("encode hook input: %w", err)
	}
	var answer []byte
	if h.URL != "" {
		answer, err = h.post(ctx, body)
	} else {
		answer, err = h.exec(ctx, body)
	}
	if err != nil {
		if ctx.Err() != nil && errors.Is(context.Cause(ctx), errHookTimeout) {
			return nil, fmt.Errorf("%w (%s)", errHookTimeout, h.Timeout)
		}
		return nil, err
	}
	var out hookOutput
	if err := json.Unmarshal(answer, &out); err != nil {
		return nil, fmt.Errorf("%w: %v: %.200q", errHookAnswer, err, answer)
	}
	switch {
	case out.AllowProvisioning == nil:
		return nil, fmt.Errorf("%w: allowProvisioning is missing", errHookDenied)
	case !*out.AllowProvisioning:
		return nil, fmt.Errorf("%w: allowProvisioning is false", errHookDenied)
	}
	return out.ParameterOverrides, nil
}

func (h *HookSettings) exec(ctx context.Context, input []byte) ([]byte, error) {
	cmd := exec.CommandContext(ctx, h.Command[0], h.Command[1:]...)
	cmd.Dir = h.dir
	cmd.Stdin = bytes.NewReader(input)
	stdout := &capWriter{max: maxHookAnswer}
	stderr := &capWriter{max: 4096, truncate: true}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// A hook that forks (a shell script running sleep) must not keep the
	// request waiting on its children: the whole process group is killed
	// at the deadline, and pipes are closed shortly after regardless.
	procgroup.KillOnCancel(cmd)
	cmd.WaitDelay = hookKillGrace
	err := cmd.Run()
	if stdout.over {
		return nil, fmt.Errorf("%w: more than %d bytes", errHookAnswer, maxHookAnswer)
	}
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("hook %s: %w: %s", h.Command[0], err, msg)
		}
		return nil, fmt.Errorf("hook %s: %w", h.Command[0], err)
	}
	return stdout.Bytes(), nil
}

func (h *HookSettings) post(ctx context.Context, input []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(input))
	if err != nil {
		return nil, fmt.Errorf("hook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("hook %s: %w", h.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxHookAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("hook %s: read answer: %w", h.URL, err)
	}
	if resp.StatusCode/100 != 2 {
		// A Lambda that throws fails the invocation; an HTTP hook's
		// non-2xx status is the same thing.
		return nil, fmt.Errorf("hook %s answered %s: %.200q", h.URL, resp.Status, b)
	}
	if len(b) > maxHookAnswer {
		return nil, fmt.Errorf("%w: more than %d bytes", errHookAnswer, maxHookAnswer)
	}
	return b, nil
}

// capWriter keeps at most max bytes; past that it either records the
// overflow (stdout: an oversized answer is an error) or drops the rest
// (stderr: only for the log). The buffer is a field, not embedded: an
// embedded bytes.Buffer's ReadFrom would let io.Copy bypass the cap.
type capWriter struct {
	buf      bytes.Buffer
	max      int
	truncate bool
	over     bool
}

func (w *capWriter) Write(p []byte) (int, error) {
	room := w.max - w.buf.Len()
	if len(p) > room {
		w.over = w.over || !w.truncate
		w.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return w.buf.Write(p)
}

func (w *capWriter) Bytes() []byte  { return w.buf.Bytes() }
func (w *capWriter) String() string { return w.buf.String() }

// preProvision runs between the template checks and the registry update
// of a RegisterThing: it checks the parameter limits, then runs the
// template's pre-provisioning hook, if any, and merges its overrides into
// the parameters (defaults are applied later, by Evaluate). It runs without
// the registry lock, so a slow hook holds up only its own device.
//
// A token that is unknown, expired or already used skips both: the
// registry update rejects it, or answers a repeat with the thing already
// registered, and a repeat must not depend on the hook's mood a second
// time.
func (s *Server) preProvision(log *slog.Logger, tmpl *Template, token string, params map[string]string, from requester) (map[string]string, *Rejection) {
	s.mu.RLock()
	var cert Certificate
	tok, ok := s.reg.Tokens[token]
	if ok {
		c, found := s.reg.Certificates[tok.CertificateID]
		ok = found && tok.UsedAt == nil && s.now().Sub(tok.IssuedAt) <= s.lifetime
		if ok {
			cert = *c
		}
	}
	s.mu.RUnlock()
	if !ok {
		return params, nil
	}
	if err := CheckParameterLimits(params); err != nil {
		return nil, reject(400, CodeInvalidParameters, "%v", err)
	}
	h := tmpl.settings.Hook
	if h == nil {
		return params, nil
	}
	in := hookInput{
		ClaimCertificateID: from.ClaimCertificateID,
		CertificateID:      cert.ID,
		CertificatePEM:     cert.PEM,
		TemplateARN:        fmt.Sprintf(templateArnFormat, s.st.Region, s.st.AccountID, tmpl.Name),
		ClientID:           from.ClientID,
		Parameters:         params,
	}
	if in.Parameters == nil {
		in.Parameters = map[string]string{}
	}
	ctx, cancel := context.WithTimeoutCause(context.Background(), h.Timeout, errHookTimeout)
	defer cancel()
	// Close must not wait out a hook's full timeout.
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	overrides, err := h.call(ctx, in)
	if err != nil {
		log.Warn("pre-provisioning hook denied", "template", tmpl.Name, "hook", h.target(), "after", time.Since(start).Round(time.Millisecond).String(), "reason", err.Error())
		return nil, reject(403, CodeAccessDenied, "Access denied: the pre-provisioning hook of template %s did not allow provisioning.", tmpl.Name)
	}
	log.Info("pre-provisioning hook allowed", "template", tmpl.Name, "hook", h.target(), "after", time.Since(start).Round(time.Millisecond).String(), "overrides", len(overrides))
	merged := maps.Clone(params)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, overrides)
	if err := CheckParameterLimits(merged); err != nil {
		return nil, reject(400, CodeInvalidParameters, "%v", err)
	}
	return merged, nil
}
