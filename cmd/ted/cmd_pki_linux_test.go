package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"path/filepath"
	"testing"

	"ted/pki"
	"ted/pki/pkitest"
)

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
		pkitest.WaitLockWaiter(t, filepath.Join(dir, "ca.lock"))
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
