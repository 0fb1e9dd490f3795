package transport

import (
	"context"
	"crypto/tls"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"ted/pki"
)

// A renewed certificate is presented, on both sides, from the next
// handshake on; sessions already up keep the one they began with.
func TestCredentialsReplaceIsLive(t *testing.T) {
	p := newTestPKI(t)
	server := p.issue(t, "dist-1", pki.RoleDistributor)
	client := p.issue(t, "web-1", pki.RoleSubscriber)
	l := testListen(t, server, nil, nil)
	before, accepted := connect(t, l, client, pki.RoleDistributor)
	oldServer, oldClient := server.Self().Serial, client.Self().Serial

	// Renewed as ted pki issue --force would, with new keys.
	for _, c := range []struct {
		cred *Credentials
		name string
		role pki.Role
	}{{server, "dist-1", pki.RoleDistributor}, {client, "web-1", pki.RoleSubscriber}} {
		files, err := pki.Issue(p.dir, c.name, c.role, []string{"127.0.0.1"}, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.cred.ReplaceFiles(files.Cert, files.Key); err != nil {
			t.Fatal(err)
		}
	}
	if server.Self().Serial == oldServer || client.Self().Serial == oldClient {
		t.Fatal("Self still tells the old certificates")
	}
	after, acceptedAfter := connect(t, l, client, pki.RoleDistributor)
	if after.Peer().Serial != server.Self().Serial || acceptedAfter.Peer().Serial != client.Self().Serial {
		t.Fatalf("new session: server presented %s, client %s; want %s and %s",
			after.Peer().Serial, acceptedAfter.Peer().Serial, server.Self().Serial, client.Self().Serial)
	}
	if before.Peer().Serial != oldServer || accepted.Peer().Serial != oldClient {
		t.Fatal("the session already up changed identities")
	}
	roundTrip(t, before, accepted)

	// Another node's certificate is refused.
	other := p.issue(t, "web-2", pki.RoleSubscriber)
	if err := client.Replace(other.Certificate()); err == nil || !strings.Contains(err.Error(), `issued to "web-2", not "web-1"`) {
		t.Fatalf("Replace with another name: %v", err)
	}
	foreign := newTestPKI(t).issue(t, "web-1", pki.RoleSubscriber)
	if err := client.Replace(foreign.Certificate()); err == nil {
		t.Fatal("Replace with a certificate of another CA succeeded")
	}
}

// Enrollment connections go to the handler, never to Accept, and ted/1
// sessions never to the handler.
func TestEnrollRouting(t *testing.T) {
	p := newTestPKI(t)
	server := p.issue(t, "dist-1", pki.RoleDistributor)
	client := p.issue(t, "web-1", pki.RoleSubscriber)
	l := testListen(t, server, nil, nil)
	ctx := testContext(t)

	// Without a handler, the protocol is not offered.
	if _, err := DialEnroll(ctx, l.Addr().String(), nil, QUICConfig{}); err == nil || !strings.Contains(err.Error(), "does not speak "+EnrollALPN) {
		t.Fatalf("DialEnroll without a handler: %v", err)
	}

	var served atomic.Int32
	got := make(chan []string, 4)
	l.HandleEnroll(func(ctx context.Context, c *EnrollConn) {
		served.Add(1)
		st, err := c.AcceptStream(ctx)
		if err != nil {
			got <- []string{"accept: " + err.Error()}
			return
		}
		defer st.Close()
		var names []string
		for _, cert := range c.PeerCertificates() {
			names = append(names, cert.Subject.CommonName)
		}
		got <- names
		_, _ = st.Write([]byte("ok"))
		_ = st.CloseWrite()
	})
	_, _ = connect(t, l, client, pki.RoleDistributor)
	if n := served.Load(); n != 0 {
		t.Fatalf("a ted/1 session reached the enrollment handler (%d)", n)
	}

	for _, c := range []struct {
		cred *Credentials
		want string
	}{{nil, ""}, {client, "web-1"}} {
		conn, err := DialEnroll(ctx, l.Addr().String(), c.cred, QUICConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.VerifyServer(nil); err == nil {
			t.Fatal("VerifyServer with no CA passed")
		}
		st, err := conn.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = st.Write([]byte("hi"))
		_ = st.CloseWrite()
		buf := make([]byte, 8)
		n, _ := st.Read(buf)
		if string(buf[:n]) != "ok" {
			t.Fatalf("answer %q", buf[:n])
		}
		if names := <-got; strings.Join(names, ",") != c.want {
			t.Fatalf("peer certificates %v, want %q", names, c.want)
		}
		_ = conn.Close(nil)
	}
	if n := served.Load(); n != 2 {
		t.Fatalf("enrollment connections served: %d, want 2", n)
	}
	firstAcceptedIs(t, l, client)
}

// firstAcceptedIs dials l with cred and checks that the next session
// Accept returns is that one: sessions are accepted in order, so anything
// dialled before that was wrongly admitted would come first.
func firstAcceptedIs(t *testing.T, l *Listener, cred *Credentials) {
	t.Helper()
	dialled, accepted := connect(t, l, cred, pki.RoleDistributor)
	if got := accepted.Peer(); got.Serial != cred.Self().Serial {
		t.Fatalf("Accept returned a session of %s (serial %s) before the one just dialled (serial %s)", got.Name, got.Serial, cred.Self().Serial)
	}
	_ = dialled.Close(nil)
}

// A client without a certificate never becomes a session, whether it
// offers ted/1 alone (refused) or ted/1 and the enrollment protocol, while
// the listener serves enrollment (taken for enrollment).
func TestNoCertificateIsNeverASession(t *testing.T) {
	p := newTestPKI(t)
	server := p.issue(t, "dist-1", pki.RoleDistributor)
	client := p.issue(t, "web-1", pki.RoleSubscriber)
	l := testListen(t, server, nil, nil)
	ctx := testContext(t)
	served := make(chan struct{}, 4)
	l.HandleEnroll(func(ctx context.Context, c *EnrollConn) {
		served <- struct{}{}
	})
	for _, protos := range [][]string{{ALPN}, {ALPN, EnrollALPN}, {EnrollALPN, ALPN}} {
		conf := &tls.Config{InsecureSkipVerify: true, NextProtos: protos, MinVersion: tls.VersionTLS13}
		conn, err := quic.DialAddr(ctx, l.Addr().String(), conf, nil)
		if slices.Contains(protos, EnrollALPN) {
			if err != nil {
				t.Fatalf("offering %v: %v", protos, err)
			}
			if got := conn.ConnectionState().TLS.NegotiatedProtocol; got != EnrollALPN {
				t.Fatalf("offering %v without a certificate: negotiated %q, want %q", protos, got, EnrollALPN)
			}
			// Kept open until served: a connection closed before the
			// listener takes it from quic-go never reaches the handler.
			defer conn.CloseWithError(0, "")
			continue
		}
		// TLS 1.3 lets the client finish before the server has checked
		// its certificate: then the server closes the connection.
		if err == nil {
			<-conn.Context().Done()
			err = context.Cause(conn.Context())
		}
		if !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("offering %v without a certificate: %v", protos, err)
		}
	}
	for range 2 {
		select {
		case <-served:
		case <-ctx.Done():
			t.Fatal("the connections offering the enrollment protocol did not reach its handler")
		}
	}
	firstAcceptedIs(t, l, client)
}

// A source address has at most maxEnrollingPerSource enrollment
// connections at once; the next is refused with the reason.
func TestEnrollPerSourceLimit(t *testing.T) {
	p := newTestPKI(t)
	l := testListen(t, p.issue(t, "dist-1", pki.RoleDistributor), nil, nil)
	ctx := testContext(t)
	release := make(chan struct{})
	var served atomic.Int32
	l.HandleEnroll(func(ctx context.Context, c *EnrollConn) {
		served.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
	})
	var conns []*EnrollConn
	defer func() {
		for _, c := range conns {
			_ = c.Close(nil)
		}
	}()
	for range maxEnrollingPerSource {
		c, err := DialEnroll(ctx, l.Addr().String(), nil, QUICConfig{})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// A dial returns once its handshake is done, before the listener has
	// routed the connection: wait until all four are being served, or the
	// next one could take a slot ahead of one of them.
	for deadline := time.Now().Add(20 * time.Second); served.Load() < maxEnrollingPerSource; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d enrollment connections served", served.Load(), maxEnrollingPerSource)
		}
		runtime.Gosched()
	}
	// The refusal comes as the connection's close, right after the
	// handshake.
	c, err := DialEnroll(ctx, l.Addr().String(), nil, QUICConfig{})
	if err == nil {
		// Were it served instead, nothing would ever answer: bound the wait.
		bounded, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		stop := context.AfterFunc(bounded, func() { _ = c.Close(nil) })
		defer stop()
		st, serr := c.OpenStream(ctx)
		if serr == nil {
			_, serr = st.Read(make([]byte, 1))
		}
		err = serr
		_ = c.Close(nil)
	}
	if err == nil || !strings.Contains(err.Error(), "serving 4 enrollments from 127.0.0.1 already") {
		t.Fatalf("enrollment beyond the limit of one source: %v", err)
	}
	close(release)
	// The slots are given back once the connections are done: another
	// connection from the same source is served again.
	for _, c := range conns {
		_ = c.Close(nil)
	}
	conns = nil
	before := served.Load()
	for deadline := time.Now().Add(20 * time.Second); served.Load() == before; {
		if time.Now().After(deadline) {
			t.Fatal("no enrollment connection served after the others ended")
		}
		if c, err := DialEnroll(ctx, l.Addr().String(), nil, QUICConfig{}); err == nil {
			_ = c.Close(nil)
		}
	}
}
