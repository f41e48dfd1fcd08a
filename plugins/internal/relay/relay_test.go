package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/internal/pluginkeys"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// cross sends err through CBOR as the host does and decodes it as the
// client does.
func cross(t *testing.T, err error) error {
	t.Helper()
	b, merr := cbor.Marshal(&Frame{Kind: KindReply, ID: 1, Err: EncodeError(err)})
	if merr != nil {
		t.Fatal(merr)
	}
	var f Frame
	if merr := cbor.Unmarshal(b, &f); merr != nil {
		t.Fatal(merr)
	}
	return f.Err.Decode()
}

func TestErrorsCross(t *testing.T) {
	sentinels := []error{keystore.ErrKeyNotFound, keystore.ErrKeyExists, errors.ErrUnsupported, pluginkeys.ErrClosed, failure.ErrUnreached, context.Canceled, context.DeadlineExceeded}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"plain", errors.New("plugin good: Params: echo: template fail always fails")},
		{"transient", failure.Transient(errors.New("plugin stuck did not answer CreateKey within 1s (callTimeout): it was stopped and starts again on the next try"))},
		{"usage", failure.Usage(`plugin "nope" is not in the plugins section of the fleet_provisioning configuration (none is configured): add it there or fix the name`)},
		{"usage with a cause", &failure.UsageError{Msg: "config: cannot read", Err: errors.New("permission denied")}},
		{"wrapped usage", fmt.Errorf("source plugin:eeprom: %w", failure.Usage("bad"))},
		{"key not found", fmt.Errorf("plugin good: GetPublicKey: memory key plugin:good/x: %w", keystore.ErrKeyNotFound)},
		{"key exists, transient", failure.Transient(fmt.Errorf("plugin good: CreateKey: %w", keystore.ErrKeyExists))},
		{"unsupported", fmt.Errorf("plugin core: this key store cannot import keys: %w", errors.ErrUnsupported)},
		{"closed", fmt.Errorf("plugin good: %w", pluginkeys.ErrClosed)},
		{"unreached", failure.Unreached(failure.Transient(errors.New("dial tcp: connection refused")))},
		{"deadline", failure.Transient(fmt.Errorf("plugin x: Sign: %w", context.DeadlineExceeded))},
		{"joined", errors.Join(errors.New("first"), fmt.Errorf("second: %w", keystore.ErrKeyNotFound))},
		{"chain", fmt.Errorf("a: %w", fmt.Errorf("b: %w", fmt.Errorf("c: %w", errors.New("root cause"))))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := cross(t, tc.err)
			if got.Error() != tc.err.Error() {
				t.Errorf("message %q, want %q", got.Error(), tc.err.Error())
			}
			if failure.Line(got) != failure.Line(tc.err) {
				t.Errorf("failure.Line %q, want %q", failure.Line(got), failure.Line(tc.err))
			}
			if failure.IsTransient(got) != failure.IsTransient(tc.err) {
				t.Errorf("transient %v, want %v", failure.IsTransient(got), failure.IsTransient(tc.err))
			}
			if failure.IsUsage(got) != failure.IsUsage(tc.err) {
				t.Errorf("usage %v, want %v", failure.IsUsage(got), failure.IsUsage(tc.err))
			}
			for _, s := range sentinels {
				if errors.Is(got, s) != errors.Is(tc.err, s) {
					t.Errorf("errors.Is(%v) = %v, want %v", s, errors.Is(got, s), errors.Is(tc.err, s))
				}
			}
		})
	}
	if EncodeError(nil) != nil || (*Error)(nil).Decode() != nil {
		t.Error("no error does not stay no error")
	}
}

func TestAttrsCross(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	attrs := []slog.Attr{
		slog.String("plugin", "good"), slog.Int("pid", 42), slog.Uint64("u", 7), slog.Float64("f", 1.5),
		slog.Bool("b", true), slog.Duration("took", 1500*time.Millisecond), slog.Time("at", now),
		slog.Group("g", slog.String("k", "v")), slog.Any("err", errors.New("boom")),
	}
	var want, got bytes.Buffer
	wl := slog.New(slog.NewJSONHandler(&want, &slog.HandlerOptions{ReplaceAttr: dropTime}))
	gl := slog.New(slog.NewJSONHandler(&got, &slog.HandlerOptions{ReplaceAttr: dropTime}))
	wl.LogAttrs(context.Background(), slog.LevelWarn, "msg", attrs...)
	var crossed []slog.Attr
	for _, a := range attrs {
		b, err := cbor.Marshal(EncodeAttr(a))
		if err != nil {
			t.Fatal(err)
		}
		var x Attr
		if err := cbor.Unmarshal(b, &x); err != nil {
			t.Fatal(err)
		}
		crossed = append(crossed, x.Decode())
	}
	gl.LogAttrs(context.Background(), slog.LevelWarn, "msg", crossed...)
	if got.String() != want.String() {
		t.Errorf("crossed record\n%s\nwant\n%s", got.String(), want.String())
	}
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	if a.Value.Kind() == slog.KindTime {
		return slog.String(a.Key, a.Value.Time().UTC().Format(time.RFC3339Nano))
	}
	return a
}
