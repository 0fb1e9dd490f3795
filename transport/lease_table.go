package transport

import (
	"sync"
	"time"
)

// Leases grant each cluster subscriber's lease to one node at a time: the
// fence that keeps two nodes of a cluster from both receiving and
// extracting, whatever their gossip says (subscriber/cluster). A parent
// distributor keeps the table; it lives here, beside the messages that
// carry it, so the cluster's tests can run the same rules.
//
// A grant lasts TTL from when the request arrived here. The node counts
// its lease from before it sent the request, shortened by its drift bound,
// so it stops acting before this table can grant the lease to another.
// Every grant to a new holder gets a larger epoch; a content session must
// carry the current one. After a restart nothing is granted for one TTL:
// a holder from before may still believe it holds the lease.
type Leases struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	grace   time.Time // no grant before this (restart)
	byName  map[string]*lease
	changed chan struct{} // closed and replaced when a lease changes hands or goes
}

type lease struct {
	holder  string
	epoch   uint64
	expires time.Time
}

// LeaseAnswer is what Acquire decided.
type LeaseAnswer struct {
	Granted bool
	Holder  string // the holder, granted or not ("" for none)
	Epoch   uint64
	// Until is when the lease ends here (granted), or when it may next be
	// granted to the asker (refused).
	Until time.Time
}

// NewLeases returns a lease table whose grants last ttl, counting time with
// now (nil: time.Now). Nothing is granted during the first ttl.
func NewLeases(ttl time.Duration, now func() time.Time) *Leases {
	if now == nil {
		now = time.Now
	}
	return &Leases{ttl: ttl, now: now, grace: now().Add(ttl), byName: map[string]*lease{}, changed: make(chan struct{})}
}

// TTL is how long a grant lasts.
func (l *Leases) TTL() time.Duration { return l.ttl }

// Acquire grants or renews the lease of cluster to node, unless another
// node holds it and it has not expired.
func (l *Leases) Acquire(cluster, node string) LeaseAnswer {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	cur := l.byName[cluster]
	if cur != nil && cur.holder == node && now.Before(cur.expires) {
		cur.expires = now.Add(l.ttl) // renewal, same epoch
		return LeaseAnswer{Granted: true, Holder: node, Epoch: cur.epoch, Until: cur.expires}
	}
	if cur != nil && now.Before(cur.expires) {
		return LeaseAnswer{Holder: cur.holder, Epoch: cur.epoch, Until: cur.expires}
	}
	if now.Before(l.grace) {
		return LeaseAnswer{Until: l.grace}
	}
	// A new grant: a larger epoch than any before, also across restarts.
	epoch := uint64(now.UnixNano())
	if cur != nil && epoch <= cur.epoch {
		epoch = cur.epoch + 1
	}
	l.byName[cluster] = &lease{holder: node, epoch: epoch, expires: now.Add(l.ttl)}
	l.changedLocked()
	return LeaseAnswer{Granted: true, Holder: node, Epoch: epoch, Until: now.Add(l.ttl)}
}

// Release ends node's lease of cluster at once, if it holds it.
func (l *Leases) Release(cluster, node string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur := l.byName[cluster]; cur != nil && cur.holder == node {
		cur.expires = l.now()
		cur.holder = ""
		l.changedLocked()
	}
}

// Valid reports whether node holds the lease of cluster under epoch now,
// and until when; changed is closed when any lease changes hands.
func (l *Leases) Valid(cluster, node string, epoch uint64) (ok bool, until time.Time, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.byName[cluster]
	if cur == nil || cur.holder != node || cur.epoch != epoch || !l.now().Before(cur.expires) {
		return false, time.Time{}, l.changed
	}
	return true, cur.expires, l.changed
}

// Holder returns the node holding the lease of cluster now, or "".
func (l *Leases) Holder(cluster string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur := l.byName[cluster]; cur != nil && l.now().Before(cur.expires) {
		return cur.holder
	}
	return ""
}

func (l *Leases) changedLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}
