//go:build !unix

package paramsource

import "os/exec"

// killGroupOnCancel: without process groups only the command itself is
// killed (exec's default); WaitDelay still bounds the wait on its pipes.
func killGroupOnCancel(cmd *exec.Cmd) {}
