package subscriber

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"ted/distribution"
	"ted/pki"
	"ted/transport"
)

// helloList returns the hellos the parent has had.
func (p *fakeParent) helloList() []transport.Hello {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.hellos)
}

func TestReloadChannelsStartsANewSession(t *testing.T) {
	p := newFakeParent(t)
	d := newDaemon(t)
	r := d.start(p.dial)
	waitUntil(t, "the first hello", func() bool { return len(p.helloList()) == 1 })
	trust := distribution.NewTrust(daemonKey().Public().(ed25519.PublicKey))

	if _, err := r.Reload([]string{"web", "bad channel"}, trust); err == nil || !strings.Contains(err.Error(), "channel") {
		t.Fatalf("Reload of a bad channel name: %v", err)
	}
	if changes, err := r.Reload([]string{"web"}, trust); err != nil || len(changes) != 0 {
		t.Fatalf("Reload of the same config: %q, %v", changes, err)
	}
	changes, err := r.Reload([]string{"web", "db"}, trust)
	if err != nil || len(changes) != 1 || changes[0] != "channels: [web db]" {
		t.Fatalf("Reload: %q, %v", changes, err)
	}
	waitUntil(t, "a hello with the new channels", func() bool {
		h := p.helloList()
		return len(h) == 2 && slices.Equal(h[1].Channels, []string{"web", "db"})
	})
	if h := p.helloList(); !slices.Equal(h[0].Channels, []string{"web"}) {
		t.Errorf("first hello asked for %v", h[0].Channels)
	}
	// New keys apply to the next offer: one signed by the old key only is
	// refused now.
	other := ed25519.NewKeyFromSeed([]byte("ted subscriber tests: other key!"))
	if _, err := r.Reload([]string{"web", "db"}, distribution.NewTrust(other.Public().(ed25519.PublicKey))); err != nil {
		t.Fatal(err)
	}
	s, _ := p.publish(daemonKey(), appRev1(), 1)
	p.offer(s)
	st := waitState(t, r.Subscriber, "app", 1, StateFailed)
	if !strings.Contains(st.Error, "refused") {
		t.Errorf("an offer signed by a key no longer trusted: %+v", st)
	}
}

func TestParentRevocationsKeptAndApplied(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := pki.InitCA(dir, false); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := newFakeParent(t)
	parent := transport.Identity{Name: "dist-1", Role: pki.RoleDistributor, Serial: "d1"}
	var dials atomic.Int64
	dial := func(ctx context.Context, addr string) (transport.Session, error) {
		dials.Add(1)
		mine, theirs := transport.NewPipe(daemonSelf, parent)
		p.wg.Add(1)
		go p.serve(theirs)
		return mine, nil
	}
	d := newDaemon(t)
	kept := filepath.Join(t.TempDir(), transport.KeptRevocationsFile)
	d.cfg.Revocations = transport.NewRevocationKeeper([]*x509.Certificate{ca.Cert}, kept, nil)
	d.start(dial)
	waitUntil(t, "the first hello", func() bool { return len(p.helloList()) == 1 })
	p.mu.Lock()
	sess, control := p.sess, p.control
	p.mu.Unlock()

	// A list that does not revoke the parent is kept, and the session
	// goes on.
	first, err := ca.Revoke([]string{"99"})
	if err != nil {
		t.Fatal(err)
	}
	if err := control.Send(&transport.Revocations{CRL: first.Raw}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the first list kept", func() bool {
		cur := d.cfg.Revocations.Current()
		return cur != nil && cur.Number.Cmp(first.Number) == 0
	})
	if sess.Context().Err() != nil {
		t.Fatal("the session ended on a list that does not revoke the parent")
	}
	// One that revokes it: the subscriber leaves, says why, and does not
	// say hello to it again.
	second, err := ca.Revoke([]string{"d1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := control.Send(&transport.Revocations{CRL: second.Raw}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the session with the revoked parent closed", func() bool { return sess.Context().Err() != nil })
	want := "certificate dist-1 (serial d1) is revoked by the CA (revocation list " + second.Number.String() + ")"
	if err := context.Cause(sess.Context()); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("the parent was told %v, want %q", err, want)
	}
	data, err := os.ReadFile(kept)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := pki.ParseRevocations(kept, data, []*x509.Certificate{ca.Cert}); err != nil || got.Number.Cmp(second.Number) != 0 {
		t.Errorf("kept %v, %v; want list 2", got, err)
	}
	before := dials.Load()
	waitUntil(t, "two more dials", func() bool { return dials.Load() >= before+2 })
	if n := len(p.helloList()); n != 1 {
		t.Errorf("%d hellos to a revoked parent, want only the first", n)
	}
}
