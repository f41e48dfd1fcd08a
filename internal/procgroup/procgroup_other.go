//go:build !unix

// Package procgroup lets a command fleetprov starts take its children down
// with it when its time is up.
package procgroup

import "os/exec"

// KillOnCancel: without process groups only the command itself is killed
// (exec's default); a WaitDelay still bounds the wait on its pipes.
func KillOnCancel(*exec.Cmd) {}
