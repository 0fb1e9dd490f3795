package transport

import (
	"sync"
	"testing"

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
