//go:build !unix && !windows

package pki

import (
	"errors"
	"os"
)

// lockFile cannot lock here, so single use of a join token cannot be
// promised: consuming one is refused rather than done unsafely.
func lockFile(*os.File) error {
	return errors.New("file locking is not supported on this system")
}
