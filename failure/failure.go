// Package failure classes errors the way the engine acts on them: a
// transient error is retried with backoff until the deadline; a fatal error
// stops the run; a usage error (bad flags or config) stops it before anything
// changed and makes the CLI exit with code 2.
package failure

import "errors"

type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// Transient marks err as worth retrying (timeouts, disconnects, throttling,
// 5xx rejections). A nil err stays nil.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &transientError{err: err}
}

// IsTransient reports whether err, or anything it wraps, was marked
// transient. Everything else is fatal: an unknown error is not retried
// blindly.
func IsTransient(err error) bool {
	var t *transientError
	return errors.As(err, &t)
}

// UsageError is bad input from the user (flags, config file, values in it).
// Its message is one line naming the key, file or value at fault and what to
// do about it.
type UsageError struct {
	Msg string
	Err error
}

func (e *UsageError) Error() string {
	if e.Err != nil && e.Msg == "" {
		return e.Err.Error()
	}
	return e.Msg
}
func (e *UsageError) Unwrap() error { return e.Err }

// Usage returns a *UsageError with the given one-line message.
func Usage(msg string) error { return &UsageError{Msg: msg} }

// IsUsage reports whether err is, or wraps, a *UsageError.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}

// ErrUnreached marks a failure that never reached the other side: a
// refused, unroutable or timed-out connection. Such a try changed nothing
// anywhere, so it does not count toward the cap on entering a state
// without progress: a device that was offline for ten boots still
// provisions when the network comes back.
var ErrUnreached = errors.New("the cloud was not reached")

type unreachedError struct{ err error }

func (e *unreachedError) Error() string { return e.err.Error() }
func (e *unreachedError) Unwrap() []error {
	return []error{e.err, ErrUnreached}
}

// Unreached marks err as a try that never reached the cloud (and keeps
// its other marks, transient included). A nil err stays nil.
func Unreached(err error) error {
	if err == nil {
		return nil
	}
	return &unreachedError{err: err}
}
