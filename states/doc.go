// Package states holds one file per provisioning step. Each state does its
// own work on engine.Run and returns; none names the state that follows it:
// the steps declared in engine/builtin.go do.
package states

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// fileOwner resolves Greengrass's posixUser ("user[:group]") to the numeric
// owner given to the files we write. Only root can give files away, and only
// root needs to: a non-root run keeps its own ownership.
func fileOwner(cfg *config.Config) (*keystore.Owner, error) {
	if cfg.PosixUser == "" || os.Geteuid() != 0 {
		return nil, nil
	}
	name, group, _ := strings.Cut(cfg.PosixUser, ":")
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("posixUser %q: no such user on this system: create it or change runWithDefault.posixUser", cfg.PosixUser)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("posixUser %q: no such group %q on this system: create it or change runWithDefault.posixUser", cfg.PosixUser, group)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	return &keystore.Owner{UID: uid, GID: gid}, nil
}
