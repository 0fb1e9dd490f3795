package distributor

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"ted/transport"
)

// serveLease answers a cluster node's lease requests until the session
// ends. A node asks only while its gossip says it should be active; the
// table decides.
func (d *Distributor) serveLease(ctx context.Context, control *transport.Conn, hello *transport.Hello, log *slog.Logger) {
	stop := context.AfterFunc(ctx, func() { control.Close() })
	defer stop()
	for {
		msg, err := control.Receive()
		if err != nil {
			if ctx.Err() == nil && !transport.Ended(err) {
				log.Debug("lease session ended", "err", err)
			}
			return
		}
		req, ok := msg.(*transport.LeaseRequest)
		if !ok {
			log.Warn("lease session: unexpected message", "type", fmt.Sprintf("%T", msg))
			return
		}
		var answer transport.Lease
		if req.Release {
			d.leases.Release(hello.Cluster, hello.Node)
			log.Info("cluster lease released")
		} else {
			a := d.leases.Acquire(hello.Cluster, hello.Node)
			answer = transport.Lease{Granted: a.Granted, Holder: a.Holder, Epoch: a.Epoch}
			if a.Granted {
				answer.TTL = uint32(d.leases.TTL().Milliseconds())
			} else {
				answer.RetryIn = uint32(max(time.Until(a.Until), 0).Milliseconds())
			}
			d.mu.Lock()
			st, ok := d.seen[hello.Name]
			if !ok {
				st = &ChildStatus{Name: hello.Name}
				d.seen[hello.Name] = st
			}
			if a.Holder != "" {
				st.ActiveNode = a.Holder
			}
			d.mu.Unlock()
		}
		if err := control.Send(&answer); err != nil {
			return
		}
	}
}

// fence closes a cluster node's content session as soon as its lease is no
// longer valid: expired, or granted to another node.
func (d *Distributor) fence(ctx context.Context, hello *transport.Hello) error {
	for {
		ok, until, changed := d.leases.Valid(hello.Cluster, hello.Node, hello.Epoch)
		if !ok {
			return fmt.Errorf("%w: node %s lost the lease of cluster %s", transport.ErrUnavailable, hello.Node, hello.Cluster)
		}
		t := time.NewTimer(time.Until(until))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}
