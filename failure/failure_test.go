package failure

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"testing"
)

func TestTransient(t *testing.T) {
	base := errors.New("connection refused")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", base, false},
		{"marked", Transient(base), true},
		{"wrapped once", fmt.Errorf("dial: %w", Transient(base)), true},
		{"wrapped twice", fmt.Errorf("CreateCertificate: %w", fmt.Errorf("dial: %w", Transient(base))), true},
		{"joined with a fatal one", errors.Join(errors.New("fatal"), Transient(base)), true},
		{"joined fatal only", errors.Join(errors.New("a"), errors.New("b")), false},
		{"formatted with %v loses the mark", fmt.Errorf("dial: %v", Transient(base)), false},
		{"usage is not transient", Usage("bad flag"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsTransient(tc.err); got != tc.want {
				t.Errorf("IsTransient(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestTransientKeepsMessageAndCause(t *testing.T) {
	err := Transient(fmt.Errorf("read: %w", fs.ErrClosed))
	if got, want := err.Error(), "read: "+fs.ErrClosed.Error(); got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	if !errors.Is(err, fs.ErrClosed) {
		t.Error("errors.Is does not see the cause through Transient")
	}
	if !errors.Is(fmt.Errorf("x: %w", Transient(context.DeadlineExceeded)), context.DeadlineExceeded) {
		t.Error("errors.Is does not see the cause through %w and Transient")
	}
}

func TestTransientNilStaysNil(t *testing.T) {
	// A typed nil inside a non-nil interface would make `if err != nil`
	// true for a call that succeeded.
	if err := Transient(nil); err != nil {
		t.Fatalf("Transient(nil) = %#v, want nil", err)
	}
}

func TestUsage(t *testing.T) {
	err := Usage("config /etc/greengrass/config.yaml: templateName is required")
	if got, want := err.Error(), "config /etc/greengrass/config.yaml: templateName is required"; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	if !IsUsage(err) {
		t.Error("IsUsage(Usage(...)) = false")
	}
	if !IsUsage(fmt.Errorf("load: %w", err)) {
		t.Error("IsUsage does not see through %w")
	}
	if !IsUsage(errors.Join(errors.New("other"), err)) {
		t.Error("IsUsage does not see through errors.Join")
	}
	var u *UsageError
	if !errors.As(err, &u) || u.Msg != "config /etc/greengrass/config.yaml: templateName is required" {
		t.Errorf("errors.As(*UsageError) = %v, %+v", errors.As(err, &u), u)
	}
	for _, e := range []error{nil, errors.New("x"), Transient(errors.New("x"))} {
		if IsUsage(e) {
			t.Errorf("IsUsage(%v) = true", e)
		}
	}
}

func TestUsageErrorMessage(t *testing.T) {
	cause := errors.New("open /etc/greengrass/config.yaml: permission denied")
	tests := []struct {
		name string
		err  *UsageError
		want string
	}{
		{"message only", &UsageError{Msg: "--log-level: want debug, info, warn or error"}, "--log-level: want debug, info, warn or error"},
		{"cause only", &UsageError{Err: cause}, "open /etc/greengrass/config.yaml: permission denied"},
		{"message wins over cause", &UsageError{Msg: "config: cannot read the file", Err: cause}, "config: cannot read the file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
	if !errors.Is(&UsageError{Msg: "m", Err: cause}, cause) {
		t.Error("UsageError does not unwrap to its cause")
	}
}

func TestUnreached(t *testing.T) {
	base := errors.New("dial tcp: connection refused")
	err := Unreached(Transient(base))
	if !errors.Is(err, ErrUnreached) || !IsTransient(err) || !errors.Is(err, base) || err.Error() != base.Error() {
		t.Errorf("Unreached(Transient(e)): is unreached %v, transient %v, wraps e %v, message %q",
			errors.Is(err, ErrUnreached), IsTransient(err), errors.Is(err, base), err.Error())
	}
	if errors.Is(Transient(base), ErrUnreached) || Unreached(nil) != nil {
		t.Error("only marked errors are unreached")
	}
}
