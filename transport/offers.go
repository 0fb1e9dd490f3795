package transport

import (
	"context"
	"sync"

	"ted/distribution"
)

// OfferQueue holds the offers received and not yet handled, at most one per
// distribution: a newer offer replaces an older one not yet started, so a
// child that falls behind skips straight to the latest revision.
type OfferQueue struct {
	mu      sync.Mutex
	pending map[string]queued
	order   []string // distribution names, first come first served
	kick    chan struct{}
}

type queued struct {
	signed *distribution.Signed
	rev    uint64
}

// NewOfferQueue returns an empty queue.
func NewOfferQueue() *OfferQueue {
	return &OfferQueue{pending: map[string]queued{}, kick: make(chan struct{}, 1)}
}

// Push queues an offer, unless one of a newer revision of the same
// distribution is already queued. The offer's manifest must decode.
func (q *OfferQueue) Push(s *distribution.Signed) error {
	m, err := s.Manifest()
	if err != nil {
		return err
	}
	q.mu.Lock()
	old, ok := q.pending[m.Name]
	switch {
	case !ok:
		q.order = append(q.order, m.Name)
		q.pending[m.Name] = queued{s, m.Revision}
	case old.rev <= m.Revision:
		q.pending[m.Name] = queued{s, m.Revision}
	}
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
	return nil
}

// Next waits for an offer and takes it from the queue; nil when ctx ends.
func (q *OfferQueue) Next(ctx context.Context) *distribution.Signed {
	for {
		q.mu.Lock()
		if len(q.order) > 0 {
			name := q.order[0]
			q.order = q.order[1:]
			s := q.pending[name].signed
			delete(q.pending, name)
			q.mu.Unlock()
			return s
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-q.kick:
		}
	}
}
