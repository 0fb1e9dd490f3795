//go:build !linux

package agent

import (
	"os"
	"syscall"
)

// childAttr: no parent-death signal outside Linux; a launcher killed
// leaves its child on probation running until it is stopped.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }

// flock: no lock outside Linux.
func flock(*os.File) error { return nil }
