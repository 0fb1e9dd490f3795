package enroll

import (
	"errors"
	"strings"
	"testing"

	"ted/pki"
)

// An operator certificate is not renewed by a node: it is a person's or a
// tool's, issued with ted pki issue on the CA host.
func TestRenewRefusesOperator(t *testing.T) {
	f := newFleet(t)
	top := f.distributor("dist-1", true)
	cred := f.cred(pki.Spec{Name: "alice", Role: pki.RoleOperator})
	_, err := renewVia(t, f, top.addr, cred)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "role operator is not a node's: issue a new certificate with ted pki issue --role operator") {
		t.Fatalf("renewing an operator certificate: %v, want it refused", err)
	}
	issued, _ := f.ca.IssuedCertificates()
	for _, is := range issued {
		if is.How == "renew" {
			t.Errorf("a certificate was renewed: %+v", is)
		}
	}
}

// No join token enrolls an operator.
func TestNoTokenForOperator(t *testing.T) {
	f := newFleet(t)
	if _, _, err := f.ca.NewToken(pki.TokenSpec{Role: pki.RoleOperator}); !errors.Is(err, pki.ErrNotNodeRole) {
		t.Fatalf("token for an operator: %v, want ErrNotNodeRole", err)
	}
}
