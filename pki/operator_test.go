package pki

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The operator role: issued like any other, read back from its
// certificate, but no node's, and no join token enrolls it.
func TestOperatorRole(t *testing.T) {
	if r, err := ParseRole("operator"); err != nil || r != RoleOperator {
		t.Fatalf("ParseRole(operator) = %q, %v", r, err)
	}
	if _, err := ParseRole("admin"); err == nil || !strings.Contains(err.Error(), "publisher, distributor, subscriber, operator") {
		t.Errorf("ParseRole(admin): %v, want the roles listed", err)
	}
	for _, r := range []Role{RolePublisher, RoleDistributor, RoleSubscriber} {
		if !r.IsNode() {
			t.Errorf("%s.IsNode() = false", r)
		}
	}
	if RoleOperator.IsNode() || Role("").IsNode() {
		t.Error("operator or the empty role is a node's")
	}

	dir := t.TempDir()
	if _, err := InitCA(dir, false); err != nil {
		t.Fatal(err)
	}
	files, err := IssueSpec(dir, Spec{Name: "alice", Role: RoleOperator, Validity: 90 * 24 * time.Hour}, false)
	if err != nil {
		t.Fatalf("issue an operator certificate: %v", err)
	}
	cert, err := LoadCertificate(files.Cert)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := LoadCertPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyRole(cert, pool, RoleOperator); err != nil {
		t.Errorf("VerifyRole(operator): %v", err)
	}
	for _, r := range []Role{RolePublisher, RoleDistributor, RoleSubscriber} {
		if err := VerifyRole(cert, pool, r); !errors.Is(err, ErrWrongRole) {
			t.Errorf("an operator certificate as %s: %v, want ErrWrongRole", r, err)
		}
	}
	issued, err := ReadIssued(dir)
	if err != nil || len(issued) != 1 || issued[0].Role != RoleOperator {
		t.Errorf("index: %+v %v", issued, err)
	}

	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = ca.NewToken(TokenSpec{Role: RoleOperator, TTL: time.Hour})
	if !errors.Is(err, ErrNotNodeRole) || !strings.Contains(err.Error(), "ted pki issue --role operator") {
		t.Errorf("a join token for an operator: %v, want ErrNotNodeRole saying what to do", err)
	}
	if _, _, err := ca.NewToken(TokenSpec{Role: RoleSubscriber, TTL: time.Hour}); err != nil {
		t.Errorf("a join token for a subscriber: %v", err)
	}
}
