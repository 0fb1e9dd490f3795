package pki

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// caLockName is the file, in the CA's directory, whose lock serialises
// whatever reads the CA's records and then writes on what it read: the
// signer's check, sign and record of a renewal or an enrollment, and
// `ted pki revoke`'s look-up of names and write of the list. Without it a
// revocation by name could miss a certificate renewed between its look-up
// and its write, and a renewal could be signed for a certificate revoked
// after its check.
const caLockName = "ca.lock"

// ClockSkew is how far Sign backdates a certificate's NotBefore, so that
// it is valid at once on a peer whose clock is a little behind: a
// certificate's NotAfter - NotBefore is its validity plus ClockSkew.
const ClockSkew = clockSkew

// Locked runs fn holding an exclusive lock on DIR/ca.lock, which excludes
// other goroutines and processes doing the same with this CA directory
// (flock locks belong to the open file). fn must not call Locked again.
// It does not replace the narrower locks of ConsumeToken and Revoke,
// which fn may take.
func (ca *CA) Locked(fn func() error) error {
	path := filepath.Join(ca.Dir, caLockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, modePublic)
	if err != nil {
		return fmt.Errorf("lock CA directory: %w", err)
	}
	// Closing the file releases the lock.
	defer f.Close()
	if err := lockFile(f); err != nil {
		return fmt.Errorf("lock CA directory: lock %s: %w", path, err)
	}
	return fn()
}

// Current reports whether the index line is for a certificate still in
// force at now: not expired, and not on revoked (nil revokes nothing).
func (is Issued) Current(now time.Time, revoked *Revocations) bool {
	return now.Before(is.NotAfter) && !revoked.RevokedSerial(is.Serial)
}
