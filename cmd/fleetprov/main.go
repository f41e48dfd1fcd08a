// Command fleetprov provisions an AWS IoT device by claim. See README.md.
package main

import (
	"os"

	"github.com/fleetprov/fleetprov/cli"
	"github.com/fleetprov/fleetprov/cli/cloudcmd"
)

// build is the standard fleetprov: the built-in machine, and the local
// cloud's commands.
var build = cli.Build{Commands: cloudcmd.Commands}

func main() { os.Exit(build.Main(os.Args, os.Stdout, os.Stderr)) }
