package agent

import "syscall"

// childAttr makes a child on probation die with its launcher: a launcher
// killed (kill -9) must not leave a daemon running that no one watches,
// beside the one the next start launches.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
