package enroll

import (
	"context"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ted/pki"
	"ted/pki/pkitest"
)

// The signer checks revocation under the CA directory's lock, which
// ted pki revoke holds from its look-up to its write: a revocation made
// while a renewal waits for the lock is seen by it.
func TestRenewWaitsForTheCALock(t *testing.T) {
	f := newFleet(t)
	top := f.distributor("dist-1", true)
	cred := f.cred(pki.Spec{Name: "web-1", Role: pki.RoleSubscriber})
	other, err := pki.LoadCA(f.dir) // another process's handle
	if err != nil {
		t.Fatal(err)
	}
	renewed := make(chan error, 1)
	err = other.Locked(func() error {
		go func() {
			key, _, err := NewKey()
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				_, err = Renew(ctx, top.addr, cred, []*x509.Certificate{f.ca.Cert}, key, quiet())
			}
			renewed <- err
		}()
		pkitest.WaitLockWaiter(t, filepath.Join(f.dir, "ca.lock"))
		_, err := other.Revoke([]string{cred.Self().Serial})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-renewed; !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "the certificate is revoked") {
		t.Fatalf("renewal that waited for a revocation: %v", err)
	}
}
