//go:build !unix

package config

import (
	"os"

	"github.com/fleetprov/fleetprov/atomicfile"
)

func fileOwner(os.FileInfo) *atomicfile.Owner { return nil }
