//go:build unix

package paramsource

import (
	"os/exec"
	"syscall"
)

// killGroupOnCancel starts the command in its own process group and kills
// the whole group when the timeout passes, so a script's children die with
// it rather than keep its output pipe open.
func killGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
