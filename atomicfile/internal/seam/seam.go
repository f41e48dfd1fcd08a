// Package seam lets tests watch what atomicfile makes durable. Only
// atomicfile/atomicfiletest sets the observer, and only test binaries link
// that package, so in a release build the observer is always nil and the
// seam does nothing.
package seam

import "sync/atomic"

var observer atomic.Pointer[func(dir string)]

// SetObserver makes f see every directory fsync that succeeds from now on;
// nil stops it.
func SetObserver(f func(dir string)) {
	if f == nil {
		observer.Store(nil)
		return
	}
	observer.Store(&f)
}

// DirSynced tells the observer, if any, that dir was fsynced.
func DirSynced(dir string) {
	if f := observer.Load(); f != nil {
		(*f)(dir)
	}
}
