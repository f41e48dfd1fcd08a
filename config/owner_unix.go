//go:build unix

package config

import (
	"os"
	"syscall"

	"github.com/fleetprov/fleetprov/atomicfile"
)

// fileOwner is the owner to give a rewritten file so that it stays the
// same; nil when the process would create it with that owner anyway.
func fileOwner(info os.FileInfo) *atomicfile.Owner {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if int(st.Uid) == os.Geteuid() && int(st.Gid) == os.Getegid() {
		return nil
	}
	return &atomicfile.Owner{UID: int(st.Uid), GID: int(st.Gid)}
}
