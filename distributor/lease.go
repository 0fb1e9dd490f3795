package distributor

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"ted/transport"
)

// LeaseFile is the name of the cluster lease table in the data directory.
const LeaseFile = "leases.json"

// leaseRecordRetry is how soon a node may ask again when its grant could
// not be recorded.
const leaseRecordRetry = time.Second

// serveLease answers a cluster node's lease requests until the session
// ends. A node asks only while its gossip says it should be active; the
// table, which holds one lease per cluster, decides.
func (d *Distributor) serveLease(ctx context.Context, control *transport.Conn, peer transport.Identity, hello *transport.Hello, log *slog.Logger) {
	stop := context.AfterFunc(ctx, func() { control.Close() })
	defer stop()
	var held uint64 // the epoch this session was last granted, to log grants once
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
		cluster, holder := hello.Cluster, leaseHolder(hello)
		if req.Release {
			if err := d.leases.Release(cluster, holder); err != nil {
				log.Error("cluster lease released here, but the release could not be recorded", "err", err)
			} else {
				log.Info("cluster lease released")
			}
			held = 0
		} else {
			a := d.leases.Acquire(cluster, holder)
			answer = transport.Lease{Granted: a.Granted, Holder: nodeOf(a.Holder), Epoch: a.Epoch}
			switch {
			case a.Granted:
				answer.TTL = uint32(d.leases.TTL().Milliseconds())
				if a.Epoch != held {
					log.Info("cluster lease granted", "epoch", a.Epoch)
				}
				held = a.Epoch
			case a.Err != nil:
				log.Error("cluster lease not granted: it could not be recorded", "err", a.Err)
				answer.RetryIn = uint32(leaseRecordRetry.Milliseconds())
			default:
				answer.RetryIn = uint32(max(time.Until(a.Until), 0).Milliseconds())
				log.Debug("cluster lease refused", "holder", a.Holder, "retry_in", time.Until(a.Until).Round(time.Millisecond))
			}
			d.mu.Lock()
			st := d.seenLocked(cluster, peer)
			if a.Holder != "" {
				st.ActiveNode = nodeOf(a.Holder)
			}
			if a.Granted {
				st.Certificate = peer.Name
			}
			d.mu.Unlock()
		}
		if err := control.Send(&answer); err != nil {
			return
		}
	}
}

// checkMembership refuses a node that names a cluster not configured here,
// or one its certificate is not a member of; and a member certificate (or
// one bearing a cluster's name) that does not connect as a node of its
// cluster: the cluster's lease fences only sessions that name it.
func (d *Distributor) checkMembership(peer transport.Identity, h *transport.Hello) error {
	return d.checkMembershipOf(d.members(), peer, h)
}

// checkMembershipOf is checkMembership against mb.
func (d *Distributor) checkMembershipOf(mb *membership, peer transport.Identity, h *transport.Hello) error {
	if h.Cluster == "" {
		if cl, ok := mb.clusterOf[peer.Name]; ok {
			return d.refuse("cluster", fmt.Errorf("%w: certificate %s is a member of cluster %s on %s and may connect only as a node of it (cluster.name: %s in its config)",
				transport.ErrUnauthorized, peer.Name, cl, d.cfg.Name, cl))
		}
		if _, ok := mb.clusters[peer.Name]; ok {
			return d.refuse("cluster", fmt.Errorf("%w: certificate %s bears the name of cluster %s on %s but is not one of its members (clusters.%s.members)",
				transport.ErrUnauthorized, peer.Name, peer.Name, d.cfg.Name, peer.Name))
		}
		return nil
	}
	if h.Node == "" {
		return d.refuse("cluster", fmt.Errorf("%w: %s names cluster %s but no node", transport.ErrProtocol, peer.Name, h.Cluster))
	}
	cl, ok := mb.clusters[h.Cluster]
	if !ok {
		return d.refuse("cluster", fmt.Errorf("%w: cluster %s is not configured on %s (add it under clusters: with its member certificates)",
			transport.ErrUnauthorized, h.Cluster, d.cfg.Name))
	}
	if !slices.Contains(cl.Members, peer.Name) {
		return d.refuse("cluster", fmt.Errorf("%w: certificate %s is not a member of cluster %s on %s (clusters.%s.members)",
			transport.ErrUnauthorized, peer.Name, h.Cluster, d.cfg.Name, h.Cluster))
	}
	return nil
}

// checkLease refuses a cluster node's content session unless its node
// holds the cluster's lease under the epoch it carries.
func (d *Distributor) checkLease(h *transport.Hello) error {
	if ok, _, _ := d.leases.Valid(h.Cluster, leaseHolder(h), h.Epoch); ok {
		return nil
	}
	holder := "nobody"
	if node := nodeOf(d.leases.Holder(h.Cluster)); node != "" {
		holder = node
		d.mu.Lock()
		if st, ok := d.seen[h.Cluster]; ok && st.Certificate != "" && st.ActiveNode == node {
			holder += " with certificate " + st.Certificate
		}
		d.mu.Unlock()
	}
	return d.refuse("child", fmt.Errorf("%w: node %s of cluster %s does not hold its lease under epoch %d (%s does)", transport.ErrUnavailable, h.Node, h.Cluster, h.Epoch, holder))
}

// fence closes a cluster node's content session as soon as its lease is no
// longer valid: expired, or granted to another node.
func (d *Distributor) fence(ctx context.Context, hello *transport.Hello) error {
	for {
		ok, until, changed := d.leases.Valid(hello.Cluster, leaseHolder(hello), hello.Epoch)
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

// childKey names a child in children and seen: a cluster by its name, so
// its nodes, whatever their certificates, are one child; any other child
// by its certificate.
func childKey(peer transport.Identity, h *transport.Hello) string {
	if h.Cluster != "" {
		return h.Cluster
	}
	return peer.Name
}

// seenLocked returns the status of the child key, made if new; d.mu is
// held.
func (d *Distributor) seenLocked(key string, peer transport.Identity) *ChildStatus {
	st, ok := d.seen[key]
	if !ok {
		st = &ChildStatus{Name: key, Role: string(peer.Role)}
		d.seen[key] = st
	}
	return st
}

// leaseHolder names the holder: the node and its process instance, so two
// processes claiming the same node name are two holders.
func leaseHolder(h *transport.Hello) string { return h.Node + "#" + h.Instance }

// nodeOf is the node name of a holder.
func nodeOf(holder string) string {
	node, _, _ := strings.Cut(holder, "#")
	return node
}
