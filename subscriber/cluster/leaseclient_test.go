package cluster

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"ted/pki"
	"ted/transport"
)

// A lease session kept from before its parent's certificate was revoked is
// not used again: the next request closes it, telling the parent why, and
// fails with the reason.
func TestLeaseClientDropsRevokedParent(t *testing.T) {
	parent := transport.Identity{Name: "dist-1", Role: pki.RoleDistributor, Serial: "d1"}
	self := transport.Identity{Name: "web", Role: pki.RoleSubscriber, Serial: "a1"}
	var dials atomic.Int32
	var sessions []transport.Session
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	dial := func(ctx context.Context, addr string) (transport.Session, error) {
		dials.Add(1)
		mine, theirs := transport.NewPipe(self, parent)
		sessions = append(sessions, mine)
		wg.Go(func() {
			defer theirs.Close(nil)
			control, _, err := transport.ServerHello(context.Background(), theirs, &transport.Welcome{Name: parent.Name}, func(*transport.Hello) error { return nil })
			if err != nil {
				return
			}
			defer control.Close()
			for {
				if _, err := control.Receive(); err != nil {
					return
				}
				if err := control.Send(&transport.Lease{Granted: true, Holder: "node-a", Epoch: 1, TTL: 1000}); err != nil {
					return
				}
			}
		})
		return mine, nil
	}
	c := NewLeaseClient("dist-1:7400", dial, transport.Hello{Name: self.Name, Channels: []string{"web"}, Cluster: "web", Node: "node-a", Instance: "i1"})
	defer c.Close()
	var revoked atomic.Bool
	c.CheckPeer(func(id transport.Identity) error {
		if revoked.Load() && id.Serial == parent.Serial {
			return errors.New("certificate dist-1 (serial d1) is revoked by the CA")
		}
		return nil
	})
	if g, err := c.Acquire(t.Context()); err != nil || !g.Granted {
		t.Fatalf("first request: %+v, %v", g, err)
	}
	revoked.Store(true)
	_, err := c.Acquire(t.Context())
	if err == nil || !strings.Contains(err.Error(), "is revoked by the CA") {
		t.Fatalf("request after the revocation: %v, want refused as revoked", err)
	}
	first := sessions[0]
	if first.Context().Err() == nil {
		t.Error("the session with the revoked parent is still open")
	} else if cause := context.Cause(first.Context()); !strings.Contains(cause.Error(), "is revoked by the CA") {
		t.Errorf("the session was closed with %v, want the reason", cause)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d dials, want 1", n)
	}
	// The next request dials again, and a session to a revoked parent is
	// refused before its hello.
	if _, err := c.Acquire(t.Context()); err == nil || !strings.Contains(err.Error(), "is revoked by the CA") {
		t.Fatalf("request with a new session: %v, want refused as revoked", err)
	}
	if n := dials.Load(); n != 2 || sessions[1].Context().Err() == nil {
		t.Errorf("%d dials, second session open: %v; want 2 dials, the second closed", n, sessions[1].Context().Err() == nil)
	}
}
