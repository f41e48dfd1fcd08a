//go:build unix

package cloudsim

import (
	"os/exec"
	"syscall"
)

// killGroupOnCancel starts the hook in its own process group and kills the
// whole group when the deadline passes, so a hook's children die with it.
func killGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
