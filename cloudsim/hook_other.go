//go:build !unix

package cloudsim

import "os/exec"

// killGroupOnCancel: without process groups only the hook itself is
// killed (exec's default); WaitDelay still bounds the wait on its pipes.
func killGroupOnCancel(cmd *exec.Cmd) {}
