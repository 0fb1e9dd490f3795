package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"ted/pki"
)

// memCredentials signs a certificate for name in memory with the CA of p,
// as bench/fleet does, and makes credentials of it.
func (p *testPKI) memCredentials(t *testing.T, name string, role pki.Role) (*Credentials, error) {
	t.Helper()
	ca, err := pki.LoadCA(p.dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Sign(pki.Spec{Name: name, Role: role, Groups: []string{"fleet"}}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return NewCredentials(pool, tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key}, pki.RoleSubscriber)
}

func TestNewCredentials(t *testing.T) {
	p := newTestPKI(t)
	cred, err := p.memCredentials(t, "sim-1", pki.RoleSubscriber)
	if err != nil {
		t.Fatal(err)
	}
	if self := cred.Self(); self.Name != "sim-1" || self.Role != pki.RoleSubscriber || len(self.Groups) != 1 || self.Groups[0] != "fleet" {
		t.Errorf("Self = %+v", self)
	}
	if _, err := p.memCredentials(t, "dist-9", pki.RoleDistributor); !errors.Is(err, pki.ErrWrongRole) {
		t.Errorf("a distributor certificate as a subscriber's: %v", err)
	}

	other := newTestPKI(t)
	ca, err := pki.LoadCA(other.dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := ca.Sign(pki.Spec{Name: "sim-2", Role: pki.RoleSubscriber}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	ours, err := pki.LoadCA(p.dir)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ours.Cert)
	if _, err := NewCredentials(pool, tls.Certificate{Certificate: [][]byte{foreign.Raw}, PrivateKey: key}, pki.RoleSubscriber); err == nil || !strings.Contains(err.Error(), "sim-2") {
		t.Errorf("a certificate of another CA: %v", err)
	}
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	own, err := ours.Sign(pki.Spec{Name: "sim-3", Role: pki.RoleSubscriber}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewCredentials(pool, tls.Certificate{Certificate: [][]byte{own.Raw}, PrivateKey: otherKey}, pki.RoleSubscriber); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("a key of another certificate: %v", err)
	}
}

// TestEndpointSharesSocket dials several sessions, each with its own
// certificate, through one endpoint: they all come from one UDP address,
// each carries its own streams, one closing leaves the others working, and
// closing the endpoint tells the listener's side of the rest.
func TestEndpointSharesSocket(t *testing.T) {
	p := newTestPKI(t)
	l := testListen(t, p.issue(t, "dist-1", pki.RoleDistributor), nil, nil)
	ep, err := NewEndpoint(QUICConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ep.Close() })
	ctx := testContext(t)

	const n = 4
	dialled := make([]Session, n)
	accepted := map[string]Session{}
	for i := range dialled {
		cred, err := p.memCredentials(t, fmt.Sprintf("sim-%d", i), pki.RoleSubscriber)
		if err != nil {
			t.Fatal(err)
		}
		acc := acceptAsync(ctx, l)
		if dialled[i], err = ep.Dial(ctx, l.Addr().String(), cred, pki.RoleDistributor); err != nil {
			t.Fatalf("Dial %d: %v", i, err)
		}
		res := <-acc
		if res.err != nil {
			t.Fatalf("Accept: %v", res.err)
		}
		t.Cleanup(func() { _ = res.sess.Close(nil) })
		accepted[res.sess.Peer().Name] = res.sess
		if got := dialled[i].Peer().Name; got != "dist-1" {
			t.Errorf("session %d: peer %s", i, got)
		}
	}
	addrs := map[string]bool{}
	for name, s := range accepted {
		addrs[s.RemoteAddr()] = true
		if !strings.HasPrefix(name, "sim-") {
			t.Errorf("listener sees %s", name)
		}
	}
	if len(accepted) != n || len(addrs) != 1 || len(ep.LocalAddrs()) != 1 {
		t.Fatalf("%d sessions from %d addresses (%v), endpoint sockets %v; want %d from one", len(accepted), len(addrs), addrs, ep.LocalAddrs(), n)
	}
	for i, s := range dialled {
		roundTrip(t, s, accepted[fmt.Sprintf("sim-%d", i)])
	}

	// One session ends: its peer hears the reason, the others go on.
	if err := dialled[0].Close(errors.New("done with this one")); err != nil {
		t.Fatal(err)
	}
	if err := waitClosed(t, accepted["sim-0"]); err == nil || !strings.Contains(err.Error(), "done with this one") {
		t.Errorf("listener side of the closed session: %v", err)
	}
	for i := 1; i < n; i++ {
		roundTrip(t, accepted[fmt.Sprintf("sim-%d", i)], dialled[i])
	}

	if err := ep.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i := 1; i < n; i++ {
		if err := waitClosed(t, accepted[fmt.Sprintf("sim-%d", i)]); err == nil || !strings.Contains(err.Error(), "stopping") {
			t.Errorf("listener side of session %d after Close: %v", i, err)
		}
	}
	cred, err := p.memCredentials(t, "sim-late", pki.RoleSubscriber)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ep.Dial(ctx, l.Addr().String(), cred, pki.RoleDistributor); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Dial after Close: %v, want net.ErrClosed", err)
	}
}

// TestEndpointRefused: a refusal reaches the endpoint's Dial as the
// package's Dial returns it, and leaves the socket usable.
func TestEndpointRefused(t *testing.T) {
	p := newTestPKI(t)
	l := testListen(t, p.issue(t, "dist-1", pki.RoleDistributor), func(id Identity) error {
		if id.Name == "sim-bad" {
			return errors.New("not a child of dist-1")
		}
		return nil
	}, nil)
	ep, err := NewEndpoint(QUICConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ep.Close() })
	ctx := testContext(t)
	bad, err := p.memCredentials(t, "sim-bad", pki.RoleSubscriber)
	if err != nil {
		t.Fatal(err)
	}
	// Accept refuses sim-bad, then returns sim-good's session.
	acc := acceptAsync(ctx, l)
	_, err = ep.Dial(ctx, l.Addr().String(), bad, pki.RoleDistributor)
	if err == nil || !containsAll(err.Error(), "refused", "not a child of dist-1") {
		t.Fatalf("refused Dial: %v", err)
	}
	good, err := p.memCredentials(t, "sim-good", pki.RoleSubscriber)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := ep.Dial(ctx, l.Addr().String(), good, pki.RoleDistributor)
	if err != nil {
		t.Fatalf("Dial after a refusal: %v", err)
	}
	res := <-acc
	if res.err != nil {
		t.Fatal(res.err)
	}
	t.Cleanup(func() { _ = res.sess.Close(nil) })
	roundTrip(t, sess, res.sess)
}
