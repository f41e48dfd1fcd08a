//go:build unix

// Package procgroup lets a command fleetprov starts (a restart command, a
// state script, a parameter source, the local cloud's pre-provisioning
// hook) take its children down with it when its time is up, so none is
// left running and none keeps the command's output pipe open.
package procgroup

import (
	"os/exec"
	"syscall"
)

// KillOnCancel starts cmd in its own process group and kills the whole
// group when cmd's context ends.
func KillOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
