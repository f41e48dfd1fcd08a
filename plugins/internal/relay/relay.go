// Package relay is the protocol between fleetprov (plugins/remote) and its
// plugin host process (cmd/fleetprov-plugin-host, plugins/remote/serve),
// over the host's stdin and stdout.
//
// Why it is hand-written: fleetprov runs plugins in a second process so
// that it links neither go-plugin nor gRPC nor protobuf (their package
// initialisation is most of a run's memory). What crosses between the two
// processes must then be lighter still: net/rpc would bring encoding/gob
// and html/template (and their init) back, and no smaller library frames a
// stream and multiplexes concurrent calls without net/http or gob. CBOR
// (fxamacker/cbor, already used for the cloud's payloads) frames the
// stream by itself: every item is self-delimiting, so one cbor.Encoder and
// one cbor.Decoder per direction carry a sequence of Frames.
//
// The conversation:
//
//  1. Each side writes a Hello first: the host its magic and Version, the
//     client its own magic and Version, the plugins section and the lowest
//     log level it shows. The host then answers the client's Hello with a
//     Ready frame, or a Ready with an Error when it refuses it. The client
//     gives up on a host of another magic or Version, and says which
//     versions met.
//  2. The client sends Calls (Kind "call"), each with an ID unique on the
//     connection, a Method, the caller's deadline and a body. The host
//     serves them concurrently and answers each with a Reply (Kind
//     "reply", the same ID) holding a body or an Error. A client that
//     stops waiting sends a Cancel with the call's ID; the host cancels
//     the call's context (best effort: the answer may already be on its
//     way, and is then dropped).
//  3. The host sends Log frames (Kind "log") whenever a plugin or the host
//     logs a record; the client logs it through its own logger.
//  4. The host ends on a Call of MethodClose (after stopping every
//     plugin, it replies) or when its stdin reaches EOF (the client
//     exited or crashed): it stops its plugins and exits.
//
// A change that an older peer would misread needs a new Version.
package relay

import (
	"context"
	"crypto"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/plugins/internal/pluginkeys"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// Version is the relay protocol this build speaks.
const Version = 1

// Magic starts the host's Hello, ClientMagic the client's: a program
// that is not a plugin host, or one that echoes what it reads, is told
// apart from a host of another version.
const (
	Magic       = "fleetprov-plugin-host"
	ClientMagic = "fleetprov"
)

// Hello is the first item each side writes.
type Hello struct {
	Magic   string `cbor:"magic"`
	Version int    `cbor:"version"`
	// Client only: the plugins section, and the lowest level its logger
	// shows (the host sends nothing below it).
	Plugins  []config.Plugin `cbor:"plugins,omitempty"`
	LogLevel slog.Level      `cbor:"logLevel,omitempty"`
}

// Frame kinds.
const (
	KindCall   = "call"
	KindReply  = "reply"
	KindCancel = "cancel"
	KindLog    = "log"
	// KindReady follows the host's Hello once it has read the client's:
	// with no Err, the host serves; with one, it refused the client (a
	// program of another build) and exits.
	KindReady = "ready"
)

// Methods. Every call but MethodClose names a plugin.
const (
	MethodKeyStore         = "keystore"         // KeyRequest -> KeyReply (abilities); starts the plugin
	MethodCreateKey        = "CreateKey"        // KeyRequest -> KeyReply (URI, PublicKey)
	MethodGetPublicKey     = "GetPublicKey"     // KeyRequest -> KeyReply (PublicKey)
	MethodCreateSigner     = "CreateSigner"     // KeyRequest -> KeyReply (PublicKey)
	MethodSign             = "Sign"             // KeyRequest -> KeyReply (Signature)
	MethodImportKey        = "ImportKey"        // KeyRequest -> KeyReply
	MethodDeleteKey        = "DeleteKey"        // KeyRequest -> KeyReply
	MethodStoreCertificate = "StoreCertificate" // KeyRequest -> KeyReply
	MethodParams           = "Params"           // ParamsRequest -> ParamsReply
	MethodNotify           = "Notify"           // NotifyRequest -> NotifyReply
	MethodClose            = "close"            // nothing -> nothing
)

// Frame is one item on the stream after the Hellos.
type Frame struct {
	Kind   string `cbor:"k"`
	ID     uint64 `cbor:"i,omitempty"`
	Method string `cbor:"m,omitempty"`
	// Deadline is the caller's, in Unix nanoseconds; 0 for none.
	Deadline int64           `cbor:"d,omitempty"`
	Body     cbor.RawMessage `cbor:"b,omitempty"`
	Err      *Error          `cbor:"e,omitempty"`
	Log      *Record         `cbor:"l,omitempty"`
}

// Owner is keystore.Owner.
type Owner struct {
	UID int `cbor:"uid"`
	GID int `cbor:"gid"`
}

// KeyRequest is every key store call; each uses the fields it needs.
type KeyRequest struct {
	Plugin    string `cbor:"plugin"`
	URI       string `cbor:"uri,omitempty"`
	Algorithm string `cbor:"alg,omitempty"`
	Owner     *Owner `cbor:"owner,omitempty"`
	// Sign: the digest and the signer options (crypto.Hash; PSS with its
	// salt length).
	Digest     []byte      `cbor:"digest,omitempty"`
	Hash       crypto.Hash `cbor:"hash,omitempty"`
	PSS        bool        `cbor:"pss,omitempty"`
	SaltLength int         `cbor:"salt,omitempty"`
	// ImportKey: PKCS #8 DER. StoreCertificate: the certificate's DER.
	PrivateKey  []byte `cbor:"key,omitempty"`
	Certificate []byte `cbor:"cert,omitempty"`
}

// KeyReply is every key store answer.
type KeyReply struct {
	URI       string `cbor:"uri,omitempty"`
	PublicKey []byte `cbor:"pub,omitempty"` // PKIX DER
	Signature []byte `cbor:"sig,omitempty"`
	// MethodKeyStore: the optional abilities the plugin's store has, as
	// the gRPC client offers them.
	ImportKey        bool `cbor:"importKey,omitempty"`
	DeleteKey        bool `cbor:"deleteKey,omitempty"`
	StoreCertificate bool `cbor:"storeCertificate,omitempty"`
}

// ParamsRequest is paramsource.ParamsRequest for a plugin.
type ParamsRequest struct {
	Plugin       string            `cbor:"plugin"`
	TemplateName string            `cbor:"template"`
	Params       map[string]string `cbor:"params"`
}

// ParamsReply is paramsource.ParamsResponse.
type ParamsReply struct {
	Params map[string]string `cbor:"params"`
}

// NotifyRequest is hook.NotifyRequest for a plugin. Data is the event's
// data as JSON, as the plugin will get it, so that its values reach the
// plugin exactly as they would from an in-process host.
type NotifyRequest struct {
	Plugin  string `cbor:"plugin"`
	Kind    string `cbor:"kind"`
	State   string `cbor:"state,omitempty"`
	Time    int64  `cbor:"time,omitempty"` // Unix nanoseconds; 0: no time
	Attempt int    `cbor:"attempt,omitempty"`
	Error   string `cbor:"error,omitempty"`
	Data    []byte `cbor:"data,omitempty"`
}

// NotifyReply is hook.NotifyResponse.
type NotifyReply struct {
	Verdict string `cbor:"verdict,omitempty"`
	Reason  string `cbor:"reason,omitempty"`
}

// Error is an error as it crosses: its message, the message of each error
// it wraps (outermost first, as errors.Unwrap and the first of Unwrap()
// []error walk it, which is what failure.Line prints), its class and the
// sentinels errors.Is finds in it.
type Error struct {
	Chain     []string `cbor:"chain"`
	Transient bool     `cbor:"transient,omitempty"`
	Usage     bool     `cbor:"usage,omitempty"`
	Is        []string `cbor:"is,omitempty"`
}

// sentinels are the errors whose identity crosses, by name.
var sentinels = []struct {
	name string
	err  error
}{
	{"key-not-found", keystore.ErrKeyNotFound},
	{"key-exists", keystore.ErrKeyExists},
	{"unsupported", errors.ErrUnsupported},
	{"closed", pluginkeys.ErrClosed},
	{"unreached", failure.ErrUnreached},
	{"canceled", context.Canceled},
	{"deadline-exceeded", context.DeadlineExceeded},
}

// EncodeError describes err for the other side; nil stays nil.
func EncodeError(err error) *Error {
	if err == nil {
		return nil
	}
	e := &Error{Transient: failure.IsTransient(err), Usage: failure.IsUsage(err)}
	for x := err; x != nil; x = failure.UnwrapFirst(x) {
		msg := x.Error()
		// Marks (transient, unreached) repeat the message they wrap.
		if n := len(e.Chain); n > 0 && e.Chain[n-1] == msg {
			continue
		}
		e.Chain = append(e.Chain, msg)
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			e.Is = append(e.Is, s.name)
		}
	}
	return e
}

// Decode rebuilds the error: the same message, the same chain of
// messages, the same class, the same sentinels.
func (e *Error) Decode() error {
	if e == nil {
		return nil
	}
	if len(e.Chain) == 0 {
		e.Chain = []string{"unknown error"}
	}
	var is []error
	for _, name := range e.Is {
		for _, s := range sentinels {
			if s.name == name {
				is = append(is, s.err)
			}
		}
	}
	var err error
	chain := e.Chain
	// The innermost error is often the sentinel itself.
	for i, s := range is {
		if s.Error() == chain[len(chain)-1] {
			err = s
			chain = chain[:len(chain)-1]
			is = append(is[:i:i], is[i+1:]...)
			break
		}
	}
	for i := len(chain) - 1; i >= 0; i-- {
		err = &chained{msg: chain[i], next: err}
	}
	if len(is) > 0 {
		c, ok := err.(*chained)
		if !ok {
			c = &chained{msg: err.Error(), next: err}
			err = c
		}
		c.also = is
	}
	if e.Usage {
		err = &failure.UsageError{Msg: err.Error(), Err: err}
	}
	if e.Transient {
		err = failure.Transient(err)
	}
	return err
}

// chained is one link of a decoded error.
type chained struct {
	msg  string
	next error
	also []error // sentinels found beside the chain
}

func (c *chained) Error() string { return c.msg }

func (c *chained) Unwrap() []error {
	out := make([]error, 0, 1+len(c.also))
	if c.next != nil {
		out = append(out, c.next)
	}
	return append(out, c.also...)
}

// Record is a slog record from the host.
type Record struct {
	Level slog.Level `cbor:"level"`
	Msg   string     `cbor:"msg"`
	Attrs []Attr     `cbor:"attrs,omitempty"`
}

// Attr is a slog.Attr. Values keep their kind, so that a handler on the
// client prints them as the host's would have (a duration as 1.5s, a
// number unquoted in JSON); values of other kinds cross as their text.
type Attr struct {
	Key   string    `cbor:"k"`
	Kind  slog.Kind `cbor:"t"`
	Str   string    `cbor:"s,omitempty"`
	Int   int64     `cbor:"i,omitempty"`
	Uint  uint64    `cbor:"u,omitempty"`
	Float float64   `cbor:"f,omitempty"`
	Bool  bool      `cbor:"b,omitempty"`
	Group []Attr    `cbor:"g,omitempty"`
}

// EncodeAttr describes a for the other side.
func EncodeAttr(a slog.Attr) Attr {
	v := a.Value.Resolve()
	out := Attr{Key: a.Key, Kind: v.Kind()}
	switch v.Kind() {
	case slog.KindString:
		out.Str = v.String()
	case slog.KindInt64:
		out.Int = v.Int64()
	case slog.KindUint64:
		out.Uint = v.Uint64()
	case slog.KindFloat64:
		out.Float = v.Float64()
	case slog.KindBool:
		out.Bool = v.Bool()
	case slog.KindDuration:
		out.Int = int64(v.Duration())
	case slog.KindTime:
		out.Int = v.Time().UnixNano()
	case slog.KindGroup:
		for _, g := range v.Group() {
			out.Group = append(out.Group, EncodeAttr(g))
		}
	default:
		out.Kind, out.Str = slog.KindString, v.String()
	}
	return out
}

// Decode rebuilds the attribute.
func (a Attr) Decode() slog.Attr {
	switch a.Kind {
	case slog.KindInt64:
		return slog.Int64(a.Key, a.Int)
	case slog.KindUint64:
		return slog.Uint64(a.Key, a.Uint)
	case slog.KindFloat64:
		return slog.Float64(a.Key, a.Float)
	case slog.KindBool:
		return slog.Bool(a.Key, a.Bool)
	case slog.KindDuration:
		return slog.Duration(a.Key, time.Duration(a.Int))
	case slog.KindTime:
		return slog.Time(a.Key, time.Unix(0, a.Int))
	case slog.KindGroup:
		g := make([]any, 0, len(a.Group))
		for _, x := range a.Group {
			g = append(g, x.Decode())
		}
		return slog.Group(a.Key, g...)
	}
	return slog.String(a.Key, a.Str)
}

// MinLevel is the lowest level l logs at, or a level above Error when it
// logs nothing.
func MinLevel(ctx context.Context, l *slog.Logger) slog.Level {
	for _, lv := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
		if l.Enabled(ctx, lv) {
			return lv
		}
	}
	return slog.LevelError + 4
}

// Writer writes frames; it is safe for concurrent use, so that replies
// and log records from many goroutines interleave whole.
type Writer struct {
	mu  sync.Mutex
	enc *cbor.Encoder
}

// NewWriter writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{enc: cbor.NewEncoder(w)} }

// Write writes one item (a Hello or a Frame).
func (w *Writer) Write(v any) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.enc.Encode(v)
}
