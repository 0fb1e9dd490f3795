package transport

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ted/pki"
)

// revoke revokes the certificates of creds in p's CA and returns the list.
func (p *testPKI) revoke(t *testing.T, creds ...*Credentials) *pki.Revocations {
	t.Helper()
	ca, err := pki.LoadCA(p.dir)
	if err != nil {
		t.Fatal(err)
	}
	var serials []string
	for _, c := range creds {
		serials = append(serials, c.Self().Serial)
	}
	r, err := ca.Revoke(serials)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (p *testPKI) cas(t *testing.T) []*x509.Certificate {
	t.Helper()
	cas, err := pki.LoadCACertificates(p.caFile())
	if err != nil {
		t.Fatal(err)
	}
	return cas
}

// A revoked child hears why its parent refuses it; a child refuses a
// revoked parent, saying why.
func TestQUICRevokedPeerRefused(t *testing.T) {
	p := newTestPKI(t)
	dist := p.issue(t, "dist-1", pki.RoleDistributor)
	sub := p.issue(t, "sub-3", pki.RoleSubscriber)
	other := p.issue(t, "sub-4", pki.RoleSubscriber)
	rec := newLogRecorder()
	l := testListen(t, dist, nil, rec.logger())
	r := p.revoke(t, sub)
	dist.SetRevocations(r)
	if dist.Revocations() != r {
		t.Fatal("Revocations does not return the list set")
	}

	ctx := testContext(t)
	want := "certificate sub-3 (serial " + sub.Self().Serial + ") is revoked by the CA (revocation list " + r.Number.String() + ")"
	_, err := Dial(ctx, l.Addr().String(), sub, pki.RoleDistributor, QUICConfig{})
	if err == nil || !containsAll(err.Error(), "dist-1", "refused", want) {
		t.Fatalf("a revoked child dials: %v, want %q", err, want)
	}
	rec.waitWarning(t, want)

	// Not revoked: admitted.
	connect(t, l, other, pki.RoleDistributor)

	// The child side: a revoked parent is refused before anything is sent.
	sub2 := p.issue(t, "sub-5", pki.RoleSubscriber)
	r2 := p.revoke(t, dist)
	sub2.SetRevocations(r2)
	_, err = Dial(ctx, l.Addr().String(), sub2, pki.RoleDistributor, QUICConfig{})
	if !errors.Is(err, ErrRevoked) || !strings.Contains(err.Error(), "certificate dist-1 (serial "+dist.Self().Serial+") is revoked by the CA (revocation list "+r2.Number.String()+")") {
		t.Fatalf("dialling a revoked parent: %v", err)
	}
}

func TestRevocationKeeper(t *testing.T) {
	p := newTestPKI(t)
	cred := p.issue(t, "sub-1", pki.RoleSubscriber)
	victim := p.issue(t, "sub-2", pki.RoleSubscriber)
	first := p.revoke(t)
	second := p.revoke(t, victim)
	kept := filepath.Join(t.TempDir(), KeptRevocationsFile)
	k := NewRevocationKeeper(p.cas(t), kept, cred)
	if k.Message() != nil || k.Current() != nil {
		t.Fatal("a new keeper has a list")
	}
	// A configured file that is not there stops the start.
	if err := k.Load(filepath.Join(t.TempDir(), "missing.crl"), discardLog); err == nil {
		t.Error("a missing tls.crl loaded")
	}
	changed := k.Changed()
	if err := k.Load(filepath.Join(p.dir, pki.CRLName), discardLog); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("Changed not closed when a list came into force")
	}
	if k.Current().Number.Cmp(second.Number) != 0 || cred.Revocations() != k.Current() {
		t.Fatalf("in force: %v, on the credentials: %v", k.Current(), cred.Revocations())
	}
	if err := cred.CheckRevoked(victim.Self()); !errors.Is(err, ErrRevoked) {
		t.Errorf("CheckRevoked(sub-2) = %v", err)
	}

	// From a parent: an older list is ignored, a forged one refused, and
	// neither is kept.
	if _, ok, err := k.Receive("dist-1", &Revocations{CRL: first.Raw}); ok || err != nil {
		t.Errorf("an older list: changed %v, %v", ok, err)
	}
	foreign := newTestPKI(t)
	forged := foreign.revoke(t)
	if _, ok, err := k.Receive("dist-1", &Revocations{CRL: forged.Raw}); ok || err == nil || !strings.Contains(err.Error(), "revocation list from dist-1") {
		t.Errorf("a list of another CA: changed %v, %v", ok, err)
	}
	if _, err := os.Stat(kept); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kept file after refusals: %v", err)
	}
	// A newer one is kept, and a new keeper starts from it.
	third := p.revoke(t)
	if r, ok, err := k.Receive("dist-1", &Revocations{CRL: third.Raw}); !ok || err != nil || r.Number.Cmp(third.Number) != 0 {
		t.Fatalf("a newer list: %v, changed %v, %v", r, ok, err)
	}
	again := NewRevocationKeeper(p.cas(t), kept, nil)
	if err := again.Load("", discardLog); err != nil {
		t.Fatal(err)
	}
	if again.Current() == nil || again.Current().Number.Cmp(third.Number) != 0 {
		t.Errorf("a restart keeps %v, want list %v", again.Current(), third.Number)
	}
	// The configured file, older than the kept list, does not replace it.
	if err := again.Load(filepath.Join(p.dir, pki.CRLName), discardLog); err != nil || again.Current().Number.Cmp(third.Number) != 0 {
		t.Errorf("the same list again: %v, in force %v", err, again.Current().Number)
	}
	if changed, err := again.LoadFile(filepath.Join(t.TempDir(), "none.crl")); changed || err == nil {
		t.Errorf("LoadFile of a missing file: %v, %v", changed, err)
	}
}
