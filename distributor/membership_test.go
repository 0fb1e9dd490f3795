package distributor_test

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"ted/distributor"
	"ted/pki"
	"ted/transport"
)

// membershipConfig lists children by group and by pattern: channel apps for
// the web group and app-* certificates, channel db for sub-2 only.
func membershipConfig() distributor.Config {
	cfg := testConfig()
	cfg.Channels = map[string]distributor.Channel{
		"apps": {Publishers: []string{"group:publishers"}, Children: []string{"group:web", "app-*"}},
		"db":   {Publishers: []string{pub2ID.Name}, Children: []string{sub2ID.Name}},
	}
	return cfg
}

var (
	webID   = transport.Identity{Name: "web-7", Role: pki.RoleSubscriber, Groups: []string{"web"}, Serial: "7a"}
	appID   = transport.Identity{Name: "app-3", Role: pki.RoleSubscriber, Serial: "3a"}
	dbSubID = transport.Identity{Name: "sub-9", Role: pki.RoleSubscriber, Groups: []string{"db"}, Serial: "9a"}
)

func TestChildrenByGroupAndPattern(t *testing.T) {
	log := newLogBuffer(t)
	n := startDistributorLog(t, membershipConfig(), nil, log.logger())
	n.mustChild(webID, "apps")
	n.mustChild(appID, "apps")
	// Listed by group, yet in the wrong role: a publisher's group does
	// not make a subscriber certificate a publisher, nor the reverse.
	if err := n.d.Accept(transport.Identity{Name: "pub-9", Role: pki.RolePublisher, Groups: []string{"publishers"}}); err != nil {
		t.Errorf("a publisher of group publishers: %v", err)
	}
	if err := n.d.Accept(transport.Identity{Name: "web-8", Role: pki.RolePublisher, Groups: []string{"web"}}); !errors.Is(err, transport.ErrUnauthorized) {
		t.Errorf("a publisher of group web (children only): %v, want refused", err)
	}
	// Listed for neither: refused when it connects. It is told only that
	// much; the log says what it was checked against.
	err := n.d.Accept(dbSubID)
	if !errors.Is(err, transport.ErrUnauthorized) {
		t.Fatalf("sub-9: %v, want refused", err)
	}
	if want := "subscriber sub-9 (groups: db) is not a child of any channel of dist-1"; !strings.HasSuffix(err.Error(), want) {
		t.Errorf("sub-9 is told %q, want it to end in %q", err, want)
	}
	if line := log.line("child listed by no channel", "sub-9 (groups: db)", "apps [group:web, app-*], db [sub-2]"); line == "" {
		t.Error("the distributor did not log what sub-9 was checked against")
	}
	// Listed for db but asking for apps: refused at the hello.
	_, err = n.child(sub2ID, "apps")
	if !errors.Is(err, transport.ErrUnauthorized) || !strings.Contains(err.Error(), "sub-2 is not a child of channel apps on dist-1: children are [group:web, app-*]") {
		t.Errorf("sub-2 asking for apps: %v", err)
	}
}

func TestReloadClosesChildrenNoLongerAllowed(t *testing.T) {
	n := startDistributor(t, membershipConfig(), nil)
	web := n.mustChild(webID, "apps")
	app := n.mustChild(appID, "apps")
	if err := n.d.Accept(dbSubID); err == nil {
		t.Fatal("sub-9 accepted before the reload")
	}

	// A bad config changes nothing.
	bad := membershipConfig()
	bad.Channels["apps"] = distributor.Channel{Publishers: []string{"pub-1"}, Children: []string{"group:", "*"}}
	if _, err := n.d.Reload(bad); err == nil || !strings.Contains(err.Error(), "channels.apps.children[0]") || !strings.Contains(err.Error(), "channels.apps.children[1]") {
		t.Fatalf("Reload of a bad config: %v, want the problems of channels.apps.children", err)
	}
	if web.sess.Context().Err() != nil || app.sess.Context().Err() != nil {
		t.Fatal("a bad reload closed sessions")
	}

	// The pattern goes and group db comes: app-3 is closed, told why;
	// web-7 stays; sub-9 may now connect.
	next := membershipConfig()
	next.Channels["apps"] = distributor.Channel{Publishers: []string{"group:publishers"}, Children: []string{"group:web", "group:db"}}
	changes, err := n.d.Reload(next)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || !strings.Contains(changes[0], "channels.apps.children: [group:web group:db]") {
		t.Errorf("changes %q, want the children of apps", changes)
	}
	waitFor(t, "app-3's session closed", func() bool { return app.sess.Context().Err() != nil })
	_, err = app.control.Receive()
	for _, want := range []string{"app-3 is not a child of channel apps on dist-1: children are [group:web, group:db]", "config of dist-1 reloaded"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("app-3 was told %v, want %q", err, want)
		}
	}
	if web.sess.Context().Err() != nil {
		t.Error("web-7's session was closed; it is still a child")
	}
	n.mustChild(dbSubID, "apps")
	if err := n.d.Accept(appID); err == nil {
		t.Error("app-3 accepted after the reload removed it")
	}
	// The same config again changes nothing.
	if changes, err := n.d.Reload(next); err != nil || len(changes) != 0 {
		t.Errorf("reloading the same config: %q, %v", changes, err)
	}
}

func TestReloadClosesPublisherNoLongerListed(t *testing.T) {
	cfg := membershipConfig()
	n := startDistributor(t, cfg, nil)
	pubID := transport.Identity{Name: "pub-9", Role: pki.RolePublisher, Groups: []string{"publishers"}}
	p := n.publisher(pubID, transport.StoreProvider(memStore(t)))
	next := membershipConfig()
	next.Channels["apps"] = distributor.Channel{Publishers: []string{pub2ID.Name}, Children: []string{"group:web"}}
	if _, err := n.d.Reload(next); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pub-9's session closed", func() bool { return p.sess.Context().Err() != nil })
	if err := context.Cause(p.sess.Context()); err == nil || !strings.Contains(err.Error(), "publisher pub-9 (groups: publishers) is not listed for any channel of dist-1") {
		t.Errorf("pub-9 was told %v", err)
	}
}

// testCA makes a CA in a temporary directory.
func testCA(t *testing.T) *pki.CA {
	t.Helper()
	dir := t.TempDir()
	if _, err := pki.InitCA(dir, false); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestRevocationClosesLiveSessions(t *testing.T) {
	ca := testCA(t)
	keeper := transport.NewRevocationKeeper([]*x509.Certificate{ca.Cert}, "", nil)
	cfg := membershipConfig()
	cfg.Revocations = keeper
	n := startDistributor(t, cfg, nil)
	web := n.mustChild(webID, "apps")
	app := n.mustChild(appID, "apps")

	r, err := ca.Revoke([]string{appID.Serial})
	if err != nil {
		t.Fatal(err)
	}
	if !keeper.Update(r) {
		t.Fatal("the first list is not newer than none")
	}
	waitFor(t, "app-3's session closed", func() bool { return app.sess.Context().Err() != nil })
	want := "certificate app-3 (serial 3a) is revoked by the CA (revocation list " + r.Number.String() + ")"
	if err := context.Cause(app.sess.Context()); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("app-3 was told %v, want %q", err, want)
	}
	// The others are sent the list, and stay.
	msg := receive(t, web.control)
	if m, ok := msg.(*transport.Revocations); !ok || string(m.CRL) != string(r.Raw) {
		t.Errorf("web-7 was sent %T, want the revocation list", msg)
	}
	if web.sess.Context().Err() != nil {
		t.Error("web-7's session was closed")
	}
	if err := n.d.Accept(appID); !errors.Is(err, transport.ErrRevoked) || !strings.Contains(err.Error(), want) {
		t.Errorf("app-3 connecting again: %v, want %q", err, want)
	}
	if err := n.d.Accept(webID); err != nil {
		t.Errorf("web-7 connecting again: %v", err)
	}
	// A newer list is put in force; an older one, arriving after it, does
	// not take it back.
	r2, err := ca.Revoke([]string{dbSubID.Serial})
	if err != nil {
		t.Fatal(err)
	}
	if !keeper.Update(r2) {
		t.Fatal("the second list is not newer than the first")
	}
	if keeper.Update(r) {
		t.Error("the older list is in force after the newer one")
	}
	if keeper.Current() != r2 {
		t.Errorf("list in force is number %v, want %v", keeper.Current().Number, r2.Number)
	}
	if err := n.d.Accept(appID); !errors.Is(err, transport.ErrRevoked) {
		t.Errorf("app-3 connecting after the older list: %v, want refused as revoked", err)
	}
}

// revokingParent is a parent that sends a revocation list once send is
// closed, after a bad one, then keeps the session until the test ends.
func revokingParent(t *testing.T, crl []byte, send <-chan struct{}) transport.DialFunc {
	done := make(chan struct{})
	stopped := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		<-stopped
	})
	var once bool
	return func(ctx context.Context, addr string) (transport.Session, error) {
		if once {
			return nil, errors.New("dialled twice")
		}
		once = true
		mine, theirs := transport.NewPipe(distID, parentID)
		go func() {
			defer close(stopped)
			defer theirs.Close(nil)
			control, _, err := transport.ServerHello(context.Background(), theirs, &transport.Welcome{Name: parentID.Name}, func(*transport.Hello) error { return nil })
			if err != nil {
				return
			}
			defer control.Close()
			select {
			case <-send:
			case <-done:
				return
			}
			_ = control.Send(&transport.Revocations{CRL: []byte("not a revocation list")})
			_ = control.Send(&transport.Revocations{CRL: crl})
			select {
			case <-done:
			case <-theirs.Context().Done():
			}
		}()
		return mine, nil
	}
}

func TestRevocationsFromParentPassedDown(t *testing.T) {
	ca := testCA(t)
	kept := filepath.Join(t.TempDir(), transport.KeptRevocationsFile)
	keeper := transport.NewRevocationKeeper([]*x509.Certificate{ca.Cert}, kept, nil)
	r, err := ca.Revoke([]string{appID.Serial})
	if err != nil {
		t.Fatal(err)
	}
	cfg := membershipConfig()
	cfg.Revocations = keeper
	cfg.Parents.Addrs = []string{"parent"}
	// The list arrives from the parent, is kept and applied.
	send := make(chan struct{})
	n := startDistributor(t, cfg, revokingParent(t, r.Raw, send))
	web := n.mustChild(webID, "apps")
	app := n.mustChild(appID, "apps")
	close(send)
	waitFor(t, "the list from the parent in force", func() bool { return keeper.Current() != nil })
	waitFor(t, "app-3's session closed", func() bool { return app.sess.Context().Err() != nil })
	if err := context.Cause(app.sess.Context()); !strings.Contains(err.Error(), "is revoked by the CA (revocation list "+r.Number.String()+")") {
		t.Errorf("app-3 was told %v", err)
	}
	if m, ok := receive(t, web.control).(*transport.Revocations); !ok || string(m.CRL) != string(r.Raw) {
		t.Error("web-7 was not passed the list")
	}
	data, err := os.ReadFile(kept)
	if err != nil {
		t.Fatal(err)
	}
	again, err := pki.ParseRevocations(kept, data, []*x509.Certificate{ca.Cert})
	if err != nil || again.Number.Cmp(r.Number) != 0 {
		t.Errorf("kept list: %v, number %v", err, again)
	}
}

func TestReloadOfChannelsDialsParentAgain(t *testing.T) {
	hellos := make(chan []string, 4)
	dialled := make(chan transport.Session, 4)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
	})
	dial := func(ctx context.Context, addr string) (transport.Session, error) {
		mine, theirs := transport.NewPipe(distID, parentID)
		select {
		case dialled <- mine:
		default: // a dial too many: the hellos tell
		}
		wg.Go(func() {
			defer theirs.Close(nil)
			control, hello, err := transport.ServerHello(context.Background(), theirs, &transport.Welcome{Name: parentID.Name}, func(*transport.Hello) error { return nil })
			if err != nil {
				return
			}
			defer control.Close()
			hellos <- hello.Channels
			select {
			case <-stop:
			case <-theirs.Context().Done():
			}
		})
		return mine, nil
	}
	cfg := membershipConfig()
	cfg.Parents.Addrs = []string{"parent"}
	cfg.Parents.RetryMin = 10 * time.Millisecond
	n := startDistributor(t, cfg, dial)
	if got := await(t, hellos, "the first hello"); !slices.Equal(got, []string{"apps", "db"}) {
		t.Fatalf("first hello for %v", got)
	}
	next := membershipConfig()
	next.Channels["mail"] = distributor.Channel{Children: []string{"group:mail"}}
	if _, err := n.d.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := await(t, hellos, "a hello with the new channels"); !slices.Equal(got, []string{"apps", "db", "mail"}) {
		t.Errorf("hello after the reload for %v", got)
	}
	<-dialled // the first session, closed by the reload
	parent := await(t, dialled, "the second session")
	// Reload closes the parent's session before it returns, once it is
	// registered: wait for that, so that a wrong close cannot come later.
	waitFor(t, "the second session registered as the parent's", func() bool { return n.d.Upstream() == parent })
	// Children alone changed: the parent's session stays.
	again := membershipConfig()
	again.Channels["mail"] = distributor.Channel{Children: []string{"group:mail", "mail-*"}}
	if _, err := n.d.Reload(again); err != nil {
		t.Fatal(err)
	}
	if err := parent.Context().Err(); err != nil {
		t.Errorf("the parent's session was closed when only children changed: %v", context.Cause(parent.Context()))
	}
	if n.d.Upstream() != parent {
		t.Error("the parent's session was replaced when only children changed")
	}
}

// A list put in force after the listener admitted a peer, while its session
// waited to be served, still closes that session: closeRevoked ran before
// the session was tracked.
func TestRevocationAfterAdmissionClosesWaitingSession(t *testing.T) {
	ca := testCA(t)
	keeper := transport.NewRevocationKeeper([]*x509.Certificate{ca.Cert}, "", nil)
	cfg := membershipConfig()
	cfg.Revocations = keeper
	n := startDistributor(t, cfg, nil)
	if err := n.d.Accept(appID); err != nil {
		t.Fatal(err)
	}
	r, err := ca.Revoke([]string{appID.Serial})
	if err != nil {
		t.Fatal(err)
	}
	keeper.Update(r)
	waitFor(t, "the list applied to the live sessions", func() bool { return n.d.Accept(appID) != nil })
	// Only now does the admitted session reach the distributor.
	mine, theirs := transport.NewPipe(appID, distID)
	t.Cleanup(func() { mine.Close(nil) })
	select {
	case n.sessions <- theirs:
	case <-time.After(waitLimit):
		t.Fatal("the distributor did not take the session")
	}
	_, _, _ = transport.ClientHello(t.Context(), mine, &transport.Hello{Name: appID.Name, Agent: "test-agent", Channels: []string{"apps"}})
	waitFor(t, "app-3's session closed", func() bool { return mine.Context().Err() != nil })
	want := "certificate app-3 (serial 3a) is revoked by the CA"
	if err := context.Cause(mine.Context()); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("app-3 was told %v, want %q", err, want)
	}
}

// A parent whose certificate a list revokes, put in force before its
// session was registered, is not kept as the parent.
func TestRevokedParentSessionClosed(t *testing.T) {
	ca := testCA(t)
	keeper := transport.NewRevocationKeeper([]*x509.Certificate{ca.Cert}, "", nil)
	revokedParent := parentID
	revokedParent.Serial = "d0"
	r, err := ca.Revoke([]string{revokedParent.Serial})
	if err != nil {
		t.Fatal(err)
	}
	keeper.Update(r)
	dialled := make(chan transport.Session, 1)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	var once sync.Once
	dial := func(ctx context.Context, addr string) (transport.Session, error) {
		mine, theirs := transport.NewPipe(distID, revokedParent)
		wg.Go(func() {
			defer theirs.Close(nil)
			control, _, err := transport.ServerHello(context.Background(), theirs, &transport.Welcome{Name: parentID.Name}, func(*transport.Hello) error { return nil })
			if err == nil {
				defer control.Close()
			}
			<-theirs.Context().Done()
		})
		once.Do(func() { dialled <- mine })
		return mine, nil
	}
	cfg := membershipConfig()
	cfg.Revocations = keeper
	cfg.Parents.Addrs = []string{"parent"}
	cfg.Parents.RetryMin = time.Hour // one dial is enough to judge
	cfg.Parents.RetryMax = time.Hour
	n := startDistributor(t, cfg, dial)
	parent := await(t, dialled, "the dial to the parent")
	waitFor(t, "the revoked parent's session closed", func() bool { return parent.Context().Err() != nil })
	if err := context.Cause(parent.Context()); err == nil || !strings.Contains(err.Error(), "certificate dist-0 (serial d0) is revoked by the CA") {
		t.Errorf("the parent was told %v", err)
	}
	if n.d.Upstream() != nil {
		t.Error("the revoked parent is still registered")
	}
}

// childSpeaking connects as id over a session of protocol and asks for
// channels, as connect and child do.
func (n *node) childSpeaking(id transport.Identity, protocol string, held string, channels ...string) *childSession {
	n.t.Helper()
	if err := n.d.Accept(id); err != nil {
		n.t.Fatal(err)
	}
	mine, theirs := transport.NewPipeSpeaking(id, distID, protocol)
	n.t.Cleanup(func() { mine.Close(nil) })
	select {
	case n.sessions <- theirs:
	case <-time.After(waitLimit):
		n.t.Fatalf("the distributor did not accept %s within %v", id, waitLimit)
	}
	control, _, err := transport.ClientHello(n.t.Context(), mine, &transport.Hello{Name: id.Name, Agent: "test-agent", Channels: channels, CRLNumber: held})
	if err != nil {
		n.t.Fatal(err)
	}
	return &childSession{t: n.t, sess: mine, control: control}
}

// A child of the first protocol version (ted/1) is never sent a
// revocation list, whose message it could not decode, and keeps its
// session; a ted/1.1 child is sent it.
func TestRevocationsOnlyToChildrenThatSpeakThem(t *testing.T) {
	ca := testCA(t)
	keeper, r := revokedKeeper(t, ca, "ff")
	cfg := membershipConfig()
	cfg.Revocations = keeper
	n := startDistributor(t, cfg, nil)
	old := n.childSpeaking(webID, transport.ALPN1, "", "apps")
	current := n.childSpeaking(appID, transport.ALPN, "", "apps")
	if m, ok := receive(t, current.control).(*transport.Revocations); !ok || string(m.CRL) != string(r.Raw) {
		t.Fatal("the ted/1.1 child was not sent the list")
	}
	// A newer list: sent to the ted/1.1 child only.
	r2, err := ca.Revoke([]string{"fe"})
	if err != nil {
		t.Fatal(err)
	}
	keeper.Update(r2)
	if m, ok := receive(t, current.control).(*transport.Revocations); !ok || string(m.CRL) != string(r2.Raw) {
		t.Fatal("the ted/1.1 child was not sent the newer list")
	}
	// The ted/1 child's first message is the offer published after both
	// lists: nothing came before it.
	src := memStore(t)
	s, _ := build(t, src, publisherKey(), appFiles(1), 1, "apps")
	n.publish(transport.Identity{Name: "pub-9", Role: pki.RolePublisher, Groups: []string{"publishers"}}, src, s)
	if msg := receive(t, old.control); msg == nil {
		t.Fatal("nothing for the ted/1 child")
	} else if _, ok := msg.(*transport.Offer); !ok {
		t.Fatalf("the ted/1 child was sent %T first, want the offer", msg)
	}
	if old.sess.Context().Err() != nil {
		t.Errorf("the ted/1 child's session ended: %v", context.Cause(old.sess.Context()))
	}
}

// A child that tells, in its hello, the number of the list it holds is not
// sent that list again when it reconnects; a newer one it is.
func TestRevocationsNotSentAgainToChildThatHoldsThem(t *testing.T) {
	ca := testCA(t)
	keeper, r := revokedKeeper(t, ca, "ff")
	cfg := membershipConfig()
	cfg.Revocations = keeper
	n := startDistributor(t, cfg, nil)
	child := n.childSpeaking(webID, transport.ALPN, r.Number.String(), "apps")
	waitFor(t, "the child connected", func() bool {
		st := n.d.Status()
		return len(st.Children) == 1 && st.Children[0].Connected
	})
	r2, err := ca.Revoke([]string{"fe"})
	if err != nil {
		t.Fatal(err)
	}
	keeper.Update(r2)
	m, ok := receive(t, child.control).(*transport.Revocations)
	if !ok {
		t.Fatal("the child was not sent the newer list")
	}
	if string(m.CRL) != string(r2.Raw) {
		t.Error("the child was sent the list it holds before the newer one")
	}
}

// revokedKeeper is a revocation keeper of ca holding a list that revokes
// serials, and that list.
func revokedKeeper(t *testing.T, ca *pki.CA, serials ...string) (*transport.RevocationKeeper, *pki.Revocations) {
	t.Helper()
	keeper := transport.NewRevocationKeeper([]*x509.Certificate{ca.Cert}, "", nil)
	r, err := ca.Revoke(serials)
	if err != nil {
		t.Fatal(err)
	}
	keeper.Update(r)
	return keeper, r
}
