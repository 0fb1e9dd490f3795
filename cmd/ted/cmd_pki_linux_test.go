package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ted/pki"
)

// waitLockWaiter returns once a process or goroutine waits for the flock
// on path (Linux lists waiters in /proc/locks with "->").
func waitLockWaiter(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	ino := fmt.Sprintf(":%d ", fi.Sys().(*syscall.Stat_t).Ino)
	for deadline := time.Now().Add(20 * time.Second); ; {
		data, err := os.ReadFile("/proc/locks")
		if err != nil {
			t.Skipf("cannot see waiters: %v", err)
		}
		for line := range strings.Lines(string(data)) {
			if strings.Contains(line, "->") && strings.Contains(line, "FLOCK") && strings.Contains(line, ino) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing waits for the lock on %s", path)
		}
		time.Sleep(time.Millisecond) // polling /proc/locks
	}
}

// ted pki revoke NAME resolves the name and writes the list under the CA
// directory's lock, which a signing distributor holds from its checks to
// its record: a certificate renewed while the revocation waits is revoked
// with its name.
func TestPKIRevokeWaitsForTheCALock(t *testing.T) {
	dir := newTestCA(t)
	if _, _, err := runPKI(t, "issue", "--dir", dir, "--name", "web-1", "--role", "subscriber"); err != nil {
		t.Fatal(err)
	}
	signer, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	var renewed string
	done := make(chan error, 1)
	var out bytes.Buffer
	err = signer.Locked(func() error {
		go func() {
			done <- runPKIRevoke(context.Background(), &globalOptions{json: true}, pkiRevokeOptions{dir: dir}, []string{"web-1"}, &out)
		}()
		waitLockWaiter(t, filepath.Join(dir, "ca.lock"))
		// What the signer does for a renewal, while the revocation waits.
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		cert, err := signer.Sign(pki.Spec{Name: "web-1", Role: pki.RoleSubscriber}, key.Public())
		if err != nil {
			return err
		}
		issued, _ := signer.IssuedCertificates()
		renewed = pki.SerialHex(cert)
		return signer.RecordRenewal(cert, issued[0].Serial)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var res struct {
		Revoked []struct {
			Name, Serial string
			Already      bool
		}
		CRL, Number string
		Count       int
	}
	decodeOne(t, out.Bytes(), &res)
	if len(res.Revoked) != 2 || res.Revoked[1].Serial != renewed {
		t.Fatalf("revoked %+v; want web-1's two certificates, the renewed %s among them", res.Revoked, renewed)
	}
}
