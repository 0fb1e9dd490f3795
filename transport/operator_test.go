package transport

import (
	"errors"
	"testing"

	"ted/pki"
)

// An operator certificate is no node's: a daemon cannot load it as its
// own, and a child that dials a listener presenting one refuses it.
func TestOperatorIsNoNode(t *testing.T) {
	p := newTestPKI(t)
	files, err := pki.Issue(p.dir, "alice", pki.RoleOperator, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []pki.Role{pki.RolePublisher, pki.RoleDistributor, pki.RoleSubscriber} {
		if _, err := LoadCredentials(p.caFile(), files.Cert, files.Key, role); !errors.Is(err, pki.ErrWrongRole) {
			t.Errorf("an operator certificate as a %s's: %v, want ErrWrongRole", role, err)
		}
	}
	// A listener with an operator certificate (a tool built to pose as a
	// parent): children refuse it.
	op, err := LoadCredentials(p.caFile(), files.Cert, files.Key, pki.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	l := testListen(t, op, nil, nil)
	_, err = Dial(testContext(t), l.Addr().String(), p.issue(t, "web-01", pki.RoleSubscriber), pki.RoleDistributor, QUICConfig{})
	if !errors.Is(err, pki.ErrWrongRole) || !containsAll(err.Error(), "alice", "role operator", "want distributor") {
		t.Errorf("dialling a parent with an operator certificate: %v, want it refused", err)
	}
}
