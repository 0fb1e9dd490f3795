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
// There is one lease per cluster name, whichever certificates its nodes
// use; the holder is named by its node and process instance. A grant lasts
// TTL from when the request arrived here. The node counts its lease from
// before it sent the request, shortened by its drift bound, so it stops
// acting before this table can grant the lease to another. Every grant to
// a new holder gets a larger epoch; a content session must carry the
// current one.
//
// After a start nothing is granted for one TTL (the grace): a holder from
// before may still believe it holds the lease. A table opened from a file
// (OpenLeases) knows those holders: each may renew at once under its
// recorded epoch, and only the others wait.
type Leases struct {
	ttl time.Duration
	now func() time.Time
	// file, if set, records every cluster's holder and epoch (OpenLeases).
	file string

	mu      sync.Mutex
	grace   time.Time // no new grant before this (start)
	byName  map[string]*lease
	changed chan struct{} // closed and replaced when a lease changes hands or goes
}

type lease struct {
	holder  string // "" once released
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
	// Err is why a new grant was refused although the lease was free: the
	// table could not record it (OpenLeases), and a grant it could forget
	// in a restart is never given.
	Err error
}

// NewLeases returns a lease table kept in memory only, whose grants last
// ttl, counting time with now (nil: time.Now). Nothing is granted during
// the first ttl.
func NewLeases(ttl time.Duration, now func() time.Time) *Leases {
	if now == nil {
		now = time.Now
	}
	return &Leases{ttl: ttl, now: now, grace: now().Add(ttl), byName: map[string]*lease{}, changed: make(chan struct{})}
}

// TTL is how long a grant lasts.
func (l *Leases) TTL() time.Duration { return l.ttl }

// Acquire grants or renews the lease of cluster to holder, unless another
// holder has it and it has not expired.
func (l *Leases) Acquire(cluster, holder string) LeaseAnswer {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	cur := l.byName[cluster]
	if cur != nil && cur.holder == holder && now.Before(cur.expires) {
		// A renewal: same epoch, and nothing to record.
		cur.expires = now.Add(l.ttl)
		return LeaseAnswer{Granted: true, Holder: holder, Epoch: cur.epoch, Until: cur.expires}
	}
	if cur != nil && cur.holder != "" && now.Before(cur.expires) {
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
	next := &lease{holder: holder, epoch: epoch, expires: now.Add(l.ttl)}
	if err := l.saveLocked(cluster, next); err != nil {
		return LeaseAnswer{Until: now, Err: err}
	}
	l.byName[cluster] = next
	l.changedLocked()
	return LeaseAnswer{Granted: true, Holder: holder, Epoch: epoch, Until: next.expires}
}

// Release ends holder's lease of cluster at once, if it holds it. The
// error says only that the release could not be recorded: it is released
// here all the same, and after a restart the recorded holder keeps it
// until the grace ends, no longer than a holder from before would.
func (l *Leases) Release(cluster, holder string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.byName[cluster]
	if cur == nil || cur.holder != holder {
		return nil
	}
	released := &lease{epoch: cur.epoch, expires: l.now()}
	err := l.saveLocked(cluster, released)
	l.byName[cluster] = released
	l.changedLocked()
	return err
}

// Valid reports whether holder holds the lease of cluster under epoch now,
// and until when; changed is closed when any lease changes hands.
func (l *Leases) Valid(cluster, holder string, epoch uint64) (ok bool, until time.Time, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.byName[cluster]
	if cur == nil || cur.holder == "" || cur.holder != holder || cur.epoch != epoch || !l.now().Before(cur.expires) {
		return false, time.Time{}, l.changed
	}
	return true, cur.expires, l.changed
}

// Holder returns the holder of the lease of cluster now, or "".
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
