// Package outputseam lets tests decide what fleetprov would otherwise learn
// from the system: whether its output is a terminal, and where the
// journal's socket is. Only test code calls the setters, so in a release
// build they are not linked and the getters return what the system says.
package outputseam

import "sync/atomic"

var (
	terminal atomic.Pointer[bool]
	socket   atomic.Pointer[string]
)

// SetTerminal makes Terminal report is, whatever the output is.
func SetTerminal(is bool) { terminal.Store(&is) }

// Terminal returns what SetTerminal set, and whether it was set.
func Terminal() (is, set bool) {
	if p := terminal.Load(); p != nil {
		return *p, true
	}
	return false, false
}

// SetJournalSocket makes JournalSocket return path.
func SetJournalSocket(path string) { socket.Store(&path) }

// JournalSocket returns the socket SetJournalSocket set, or def.
func JournalSocket(def string) string {
	if p := socket.Load(); p != nil {
		return *p
	}
	return def
}
