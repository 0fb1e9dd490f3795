package agent

import (
	"os"
	"syscall"
)

// childAttr makes a child on probation die with its launcher: a launcher
// killed (kill -9) must not leave a daemon running that no one watches,
// beside the one the next start launches.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// flock takes an exclusive lock on f without waiting.
func flock(f *os.File) error { return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) }
