package failure

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
)

func TestLineCauseFirst(t *testing.T) {
	root := errors.New("connection refused")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"plain", root, "connection refused"},
		{"one wrapper", fmt.Errorf("connect to h:8883: %w", root), "connection refused; connect to h:8883"},
		{"marks add no words", Unreached(Transient(fmt.Errorf("dial: %w", root))), "connection refused; dial"},
		{"outermost first", fmt.Errorf("gave up after 4 attempts: %w", fmt.Errorf("connect to h:8883: %w", root)),
			"connection refused; gave up after 4 attempts: connect to h:8883"},
		{"a wrapper that puts the cause in the middle stands whole",
			fmt.Errorf("the device looks provisioned, but %w: run reset", root), "the device looks provisioned, but connection refused: run reset"},
		{"usage as written", fmt.Errorf("flag -e: %w", Usage("bad endpoint")), "flag -e: bad endpoint"},
		{"an address named again is named once", fmt.Errorf("gave up after 4 attempts: %w", fmt.Errorf("client: connect to some-long-host.example.com:8883: %w",
			fmt.Errorf("library: failed to connect to tls://some-long-host.example.com:8883: %w", fmt.Errorf("dial tcp 10.0.0.1:8883: %w", root)))),
			"connection refused; gave up after 4 attempts: client: connect to some-long-host.example.com:8883: dial tcp 10.0.0.1:8883"},
		{"a long chain keeps its ends", fmt.Errorf("gave up after 4 attempts: %w", fmt.Errorf("client: connect to some-long-host.example.com:8883: %w",
			fmt.Errorf("connecting to proxy proxy.factory.example.com:3128: %w", fmt.Errorf("resolving the proxy's name at the site's DNS: %w", fmt.Errorf("dial udp 10.0.0.53:53: %w", root))))),
			"connection refused; gave up after 4 attempts: ...: resolving the proxy's name at the site's DNS: dial udp 10.0.0.53:53"},
		{"the proxy that failed is named, its dial is not", fmt.Errorf("iotclient: connect to iot.example.com:8883: %w", fmt.Errorf("connecting to proxy 127.0.0.1:1: %w", fmt.Errorf("dial tcp 127.0.0.1:1: %w", fmt.Errorf("connect: %w", root)))),
			"connection refused; iotclient: connect to iot.example.com:8883: connecting to proxy 127.0.0.1:1"},
		{"where it happened stays in front", Transient(where{"CreateCertificate", fmt.Errorf("connect: %w", root)}), "CreateCertificate: connection refused; connect"},
		{"a deadline is no cause: what was waited for is", fmt.Errorf("gave up: %w", fmt.Errorf("connect to h:8883 within 2s: %w", fmt.Errorf("failed to connect: %w", context.DeadlineExceeded))),
			"failed to connect: context deadline exceeded; gave up: connect to h:8883 within 2s"},
		{"several lines become one", errors.New("a\nb"), "a; b"},
		{"joined errors stand whole", errors.Join(errors.New("a"), errors.New("b")), "a; b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Line(tc.err); got != tc.want {
				t.Errorf("Line() = %q, want %q", got, tc.want)
			}
		})
	}
	if Line(nil) != "" {
		t.Error("Line(nil) is not empty")
	}
}

// A real refused connection wrapped as the client and the engine wrap it:
// the line starts with the cause and stays short.
func TestLineRealDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, dialErr := net.Dial("tcp", addr)
	if dialErr == nil {
		t.Skip("something took the closed port")
	}
	err = fmt.Errorf("gave up after 4 attempts over 2s (retryDeadline): %w",
		Transient(fmt.Errorf("iotclient: connect to %s: %w", addr, fmt.Errorf("failed to connect to tls://%s: %w", addr, dialErr))))
	got := Line(err)
	if want := "connection refused; gave up after 4 attempts over 2s (retryDeadline): iotclient: connect to " + addr; got != want {
		t.Errorf("Line() = %q, want %q", got, want)
	}
	if len(got) > len("connection refused; ")+maxContext {
		t.Errorf("Line() is %d characters long: %q", len(got), got)
	}
	if n := len(err.Error()); n <= len(got) {
		t.Errorf("Line() (%d) is no shorter than Error() (%d)", len(got), n)
	}
}

type where struct {
	state string
	err   error
}

func (w where) Error() string { return w.state + ": " + w.err.Error() }
func (w where) Unwrap() error { return w.err }
func (w where) Where() string { return w.state }
