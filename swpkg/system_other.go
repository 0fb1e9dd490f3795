//go:build !unix

package swpkg

import (
	"errors"
	"os/exec"
)

func statfsFree(path string) (int64, error) {
	return 0, errors.New("free disk space: not supported on this system")
}

// ownProcessGroup leaves exec's default: cancelling kills the shell only.
func ownProcessGroup(cmd *exec.Cmd) {}
