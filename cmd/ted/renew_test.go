package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ted/enroll"
	"ted/pki"
)

// A crash between the renames of a renewal (the new key in place, the new
// certificate still staged beside the old one) is finished at the next
// start, before the files are loaded.
func TestLoadCredentialsFinishesAnInterruptedRenewal(t *testing.T) {
	dir := newTestCA(t)
	files, err := pki.IssueSpec(dir, pki.Spec{Name: "web-1", Role: pki.RoleSubscriber}, false)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, keyPEM, err := enroll.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := ca.Sign(pki.Spec{Name: "web-1", Role: pki.RoleSubscriber}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	// The state enroll.Renewal.Commit leaves if it stops after the key.
	if err := os.WriteFile(files.Key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files.Cert+".new", pki.EncodeCertificate(renewed), 0o644); err != nil {
		t.Fatal(err)
	}
	tf := tlsFiles{CA: filepath.Join(dir, "ca.crt"), Cert: files.Cert, Key: files.Key}
	cred, err := loadCredentials("web-1.yaml", "web-1", tf, pki.RoleSubscriber)
	if err != nil {
		t.Fatalf("start after an interrupted renewal: %v", err)
	}
	if got := cred.Self().Serial; got != pki.SerialHex(renewed) {
		t.Fatalf("in force: serial %s, want the renewed %s", got, pki.SerialHex(renewed))
	}
	if _, err := os.Stat(files.Cert + ".new"); !os.IsNotExist(err) {
		t.Fatalf("staged certificate left: %v", err)
	}
}

// A tls.renew_before longer than half the certificate's lifetime is cut
// to half, with one warning: a fresh 7-day certificate is not due with
// renew_before 720h, rather than at every check.
func TestRenewBeforeClampedWithOneWarning(t *testing.T) {
	dir := newTestCA(t)
	files, err := pki.IssueSpec(dir, pki.Spec{Name: "web-1", Role: pki.RoleSubscriber, Validity: 7 * 24 * time.Hour}, false)
	if err != nil {
		t.Fatal(err)
	}
	tf := tlsFiles{CA: filepath.Join(dir, "ca.crt"), Cert: files.Cert, Key: files.Key, RenewBefore: 720 * time.Hour}
	cred, err := loadCredentials("web-1.yaml", "web-1", tf, pki.RoleSubscriber)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	r := &renewer{config: "web-1.yaml", tls: tf, cred: cred, log: slog.New(slog.NewTextHandler(&logs, nil))}
	for range 3 {
		r.check(context.Background())
	}
	if n := strings.Count(logs.String(), "more than half the certificate's lifetime"); n != 1 {
		t.Fatalf("%d clamping warnings, want 1:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "due for renewal") {
		t.Fatalf("a fresh certificate was taken as due:\n%s", logs.String())
	}
}
