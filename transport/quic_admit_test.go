package transport

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ted/pki"
)

// TestQUICAdmitsBurstWithoutAccept: handshakes that finish while nothing
// is in Accept are admitted all the same, beyond quic-go's accept queue of
// 32, which refuses the next connection when full; Accept then returns
// them all.
func TestQUICAdmitsBurstWithoutAccept(t *testing.T) {
	const n = 100
	p := newTestPKI(t)
	l := testListen(t, p.issue(t, "dist-1", pki.RoleDistributor), nil, nil)
	client := p.issue(t, "web-01", pki.RoleSubscriber)
	ctx := testContext(t)

	errs := make(chan error, n)
	var mu sync.Mutex
	var dialled []Session
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			s, err := Dial(ctx, l.Addr().String(), client, pki.RoleDistributor, QUICConfig{})
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			dialled = append(dialled, s)
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	t.Cleanup(func() {
		for _, s := range dialled {
			s.Close(nil)
		}
	})
	for err := range errs {
		t.Errorf("Dial while nothing accepts: %v", err)
	}
	for i := range len(dialled) {
		sess, err := l.Accept(ctx)
		if err != nil {
			t.Fatalf("Accept %d of %d: %v", i+1, len(dialled), err)
		}
		defer sess.Close(nil)
		if sess.Peer().Name != "web-01" {
			t.Errorf("Accept returned %v", sess.Peer())
		}
	}
}

// TestQUICHandshakesWaitForStarvedAcceptors: while the acceptors cannot
// run (here: every one is held in the accept callback, as the CPU holds
// them behind thousands of handshakes), handshakes that finish wait for
// room in quic-go's accept queue instead of overflowing it and being
// refused with CONNECTION_REFUSED; once the acceptors run again, every
// dial is admitted.
func TestQUICHandshakesWaitForStarvedAcceptors(t *testing.T) {
	const n = acceptors + queueTickets + 20
	p := newTestPKI(t)
	release := make(chan struct{})
	var held atomic.Int32
	accept := func(Identity) error {
		held.Add(1)
		<-release
		return nil
	}
	// A handshake waits for a ticket for its handshake timeout: long enough
	// for the test on a loaded machine.
	cfg := QUICConfig{HandshakeIdleTimeout: 60 * time.Second}
	l, err := Listen("127.0.0.1:0", p.issue(t, "dist-1", pki.RoleDistributor), accept, cfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	// The queued hold their tickets until the acceptors run again.
	l.ticketHold.Store(int64(time.Hour))
	released := false
	t.Cleanup(func() {
		if !released {
			close(release)
		}
		if err := l.Close(); err != nil {
			t.Errorf("Listener.Close: %v", err)
		}
	})
	client := p.issue(t, "web-01", pki.RoleSubscriber)
	ctx := testContext(t)

	var wg sync.WaitGroup
	var failed atomic.Int32
	errs := make(chan error, n)
	sessions := make(chan Session, n)
	for range n {
		wg.Go(func() {
			s, err := Dial(ctx, l.Addr().String(), client, pki.RoleDistributor, cfg)
			if err != nil {
				failed.Add(1)
				errs <- err
				return
			}
			sessions <- s
		})
	}
	// Every acceptor is held and the queue is full; the other handshakes
	// wait rather than fail.
	deadline := time.Now().Add(30 * time.Second)
	for held.Load() < acceptors || len(l.tickets) < queueTickets {
		if time.Now().After(deadline) {
			t.Fatalf("acceptors held %d of %d, tickets %d of %d", held.Load(), acceptors, len(l.tickets), queueTickets)
		}
		if failed.Load() > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The rest are waiting for a ticket, not failing or going on.
	for l.waiting.Load() < n-acceptors-queueTickets && failed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d handshakes wait for a ticket, want %d", l.waiting.Load(), n-acceptors-queueTickets)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if f := failed.Load(); f > 0 {
		t.Errorf("%d dials failed while the acceptors were held; first: %v", f, <-errs)
	}
	close(release)
	released = true
	wg.Wait()
	close(errs)
	close(sessions)
	for err := range errs {
		t.Errorf("Dial: %v", err)
	}
	got := 0
	for s := range sessions {
		got++
		t.Cleanup(func() { s.Close(nil) })
	}
	for i := range got {
		sess, err := l.Accept(ctx)
		if err != nil {
			t.Fatalf("Accept %d of %d: %v", i+1, got, err)
		}
		defer sess.Close(nil)
	}
	if got != n {
		t.Errorf("%d of %d dials admitted", got, n)
	}
}

// TestQUICTicketsGivenBackWhenNotTaken: a connection that got a ticket
// but is never taken by an acceptor (here every acceptor is held) gives
// it back after the listener's ticket hold, so that no ticket is kept for
// good: every handshake gets past the wait, and the tickets all come back.
func TestQUICTicketsGivenBackWhenNotTaken(t *testing.T) {
	const n = acceptors + queueTickets + 8
	p := newTestPKI(t)
	release := make(chan struct{})
	accept := func(Identity) error {
		<-release
		return nil
	}
	cfg := QUICConfig{HandshakeIdleTimeout: 60 * time.Second}
	l, err := Listen("127.0.0.1:0", p.issue(t, "dist-1", pki.RoleDistributor), accept, cfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	l.ticketHold.Store(int64(50 * time.Millisecond))
	t.Cleanup(func() {
		close(release)
		if err := l.Close(); err != nil {
			t.Errorf("Listener.Close: %v", err)
		}
	})
	client := p.issue(t, "web-01", pki.RoleSubscriber)
	var wg sync.WaitGroup
	defer wg.Wait()
	// Not testContext's: its end would give every ticket back.
	dctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ended atomic.Int32
	for range n {
		wg.Go(func() {
			if s, err := Dial(dctx, l.Addr().String(), client, pki.RoleDistributor, cfg); err == nil {
				s.Close(nil)
			}
			ended.Add(1)
		})
	}
	// The last handshakes get tickets only as the first ones give theirs
	// back; once none waits and all are given back, the dials that quic-go
	// refused from its full queue end.
	deadline := time.Now().Add(10 * time.Second)
	for ended.Load() < n-acceptors-queueTickets || l.waiting.Load() > 0 || len(l.tickets) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %d dials ended, %d handshakes wait, %d tickets held", ended.Load(), l.waiting.Load(), len(l.tickets))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
