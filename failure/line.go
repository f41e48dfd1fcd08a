package failure

import (
	"context"
	"errors"
	"os"
	"strings"
)

// maxContext bounds the context Line prints after the cause: a chain of
// wrappers (retry, client, library, dialer) each naming the same address
// would otherwise make a line of 300 characters.
const maxContext = 100

// Line renders err on one line for a person: the root cause first, then
// where it happened, outermost first, with the middle of a long chain left
// out. "gave up after 4 attempts: connect to h:8883: dial tcp h:8883:
// connection refused" becomes "connection refused; gave up after 4
// attempts: connect to h:8883: dial tcp h:8883". A usage error is printed
// as written: its message already names the key at fault first.
func Line(err error) string {
	if err == nil {
		return ""
	}
	whole := flatten(err.Error())
	if IsUsage(err) {
		return whole
	}
	// An error that names where it happened (a step) keeps that in front:
	// "CreateCertificate: connection refused; ...".
	for e := err; e != nil; e = UnwrapFirst(e) {
		if p, ok := e.(interface{ Where() string }); ok {
			return p.Where() + ": " + Line(UnwrapFirst(e))
		}
		if next := UnwrapFirst(e); next == nil || flatten(next.Error()) != flatten(e.Error()) {
			break // only marks that add no words may stand above it
		}
	}
	segs := chain(err)
	if len(segs) < 2 {
		return whole
	}
	root, ctx := segs[len(segs)-1], shorten(dropRepeats(segs[:len(segs)-1]))
	return root + "; " + ctx
}

// chain splits err into what each wrapper adds, outermost first, and the
// root cause last. A wrapper whose message does not end with what it wraps
// (it put the cause in the middle, or rephrased it) is taken whole as the
// root: its own wording already says it.
func chain(err error) []string {
	var segs []string
	for err != nil {
		text := flatten(err.Error())
		next := UnwrapFirst(err)
		if next == nil {
			return append(segs, text)
		}
		inner := flatten(next.Error())
		switch {
		case UnwrapFirst(next) == nil && isDeadline(next):
			// "context deadline exceeded" says only that a wait ended:
			// what was waited for, the wrapper's words, is the cause.
			return append(segs, text)
		case text == inner:
			// A mark (transient, unreached) that adds no words.
		case strings.HasSuffix(text, ": "+inner):
			if s := strings.TrimSuffix(text, ": "+inner); s != "" {
				segs = append(segs, s)
			}
		default:
			return append(segs, text)
		}
		err = next
	}
	return segs
}

// dropRepeats leaves out the wrappers that only name again an address an
// outer wrapper named ("failed to connect to tls://ADDR", "dial tcp ADDR"
// under "connect to ADDR"), and the bare system call name ("connect",
// "read") after them. What is left names each address once, so the part
// that says which one failed ("connecting to proxy HOST:PORT") is not the
// part cut for length.
func dropRepeats(ctx []string) []string {
	var kept []string
	dropped := false
	for i, seg := range ctx {
		if dropped && !strings.ContainsAny(seg, " :") {
			continue
		}
		dropped = false
		words := strings.Fields(seg)
		if i > 0 && len(words) > 1 {
			addr := words[len(words)-1]
			if _, rest, ok := strings.Cut(addr, "://"); ok {
				addr = rest
			}
			if strings.Contains(addr, ":") && namedBefore(kept, addr) {
				dropped = true
				continue
			}
		}
		kept = append(kept, seg)
	}
	return kept
}

func namedBefore(segs []string, addr string) bool {
	for _, s := range segs {
		if strings.Contains(s, addr) {
			return true
		}
	}
	return false
}

// UnwrapFirst follows Unwrap() error, or the first of Unwrap() []error
// (the cause; the rest are marks like ErrUnreached). It is how Line walks
// a chain, and how plugins/internal/relay walks one to send it, so both
// see the same chain.
func UnwrapFirst(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	if m, ok := err.(interface{ Unwrap() []error }); ok {
		if errs := m.Unwrap(); len(errs) > 0 {
			return errs[0]
		}
	}
	return nil
}

// shorten joins the context, keeping the outermost wrapper and as many of
// the innermost ones (those nearest the cause, often naming the address) as
// fit; the middle becomes "...".
func shorten(ctx []string) string {
	all := strings.Join(ctx, ": ")
	if len(all) <= maxContext || len(ctx) < 3 {
		return all
	}
	first, rest := ctx[0], ctx[1:]
	n := len(first) + len(": ...")
	i := len(rest)
	for i > 0 && (i == len(rest) || n+len(rest[i-1])+2 <= maxContext) {
		n += len(rest[i-1]) + 2
		i--
	}
	if i == 0 {
		return all
	}
	return first + ": ...: " + strings.Join(rest[i:], ": ")
}

func isDeadline(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, os.ErrDeadlineExceeded)
}

func flatten(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}
