package distributor

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
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
		key, holder := leaseKey(hello), leaseHolder(hello)
		if req.Release {
			d.leases.Release(key, holder)
			log.Info("cluster lease released")
		} else {
			a := d.leases.Acquire(key, holder)
			answer = transport.Lease{Granted: a.Granted, Holder: nodeOf(a.Holder), Epoch: a.Epoch}
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
				st.ActiveNode = nodeOf(a.Holder)
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
		ok, until, changed := d.leases.Valid(leaseKey(hello), leaseHolder(hello), hello.Epoch)
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

// leaseKey names a cluster's lease: per child certificate, so two
// subscribers that chose the same cluster name do not share one.
func leaseKey(h *transport.Hello) string { return h.Name + "/" + h.Cluster }

// leaseHolder names the holder: the node and its process instance, so two
// processes claiming the same node name are two holders.
func leaseHolder(h *transport.Hello) string { return h.Node + "#" + h.Instance }

// nodeOf is the node name of a holder.
func nodeOf(holder string) string {
	node, _, _ := strings.Cut(holder, "#")
	return node
}
