// Command fleetprov provisions an AWS IoT device by claim. See README.md.
package main

import (
	"os"

	"github.com/fleetprov/fleetprov/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args, os.Stdout, os.Stderr)) }
