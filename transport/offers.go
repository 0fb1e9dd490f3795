package transport

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

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
	// backoff is the next retry wait of each distribution whose offer
	// failed; retries are the goroutines waiting to push one back.
	backoff map[string]time.Duration
	retries sync.WaitGroup
	// waiting holds, per distribution, the offer a pending retry will push:
	// one timer per distribution, so two copies of an offer that both
	// failed do not retry twice.
	waiting map[string]*distribution.Signed
}

type queued struct {
	signed *distribution.Signed
	rev    uint64
}

// MaxQueuedOffers bounds the distributions waiting in an OfferQueue: a
// parent cannot make a child hold offers without limit.
const MaxQueuedOffers = 1024

// NewOfferQueue returns an empty queue.
func NewOfferQueue() *OfferQueue {
	return &OfferQueue{pending: map[string]queued{}, kick: make(chan struct{}, 1), backoff: map[string]time.Duration{},
		waiting: map[string]*distribution.Signed{}}
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
	case !ok && len(q.pending) >= MaxQueuedOffers:
		q.mu.Unlock()
		return fmt.Errorf("%w: more than %d distributions offered and waiting", ErrProtocol, MaxQueuedOffers)
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

// RetryLater pushes back an offer whose transfer failed with err. When the
// peer said when to ask again (a send window that closed, see RetryAt), it
// waits until then, plus a fifth of minWait so the window is surely open,
// and paused is true: the transfer resumes where it stopped. Otherwise it
// waits from minWait, doubling on each failure of the same distribution up
// to maxWait. ctx ending first cancels it; a newer offer pushed meanwhile
// wins. It returns the wait.
func (q *OfferQueue) RetryLater(ctx context.Context, name string, s *distribution.Signed, err error, now time.Time, minWait, maxWait time.Duration) (wait time.Duration, paused bool) {
	q.mu.Lock()
	if at, ok := RetryAt(err); ok {
		wait, paused = max(at.Sub(now), 0)+minWait/5, true
	} else {
		wait = max(minWait, min(2*q.backoff[name], maxWait))
		q.backoff[name] = wait
	}
	q.mu.Unlock()
	q.RetryIn(ctx, name, s, wait)
	return wait, paused
}

// RetryIn pushes an offer of distribution name back after d, unless ctx
// ends first: a transfer paused by a closed send window resumes at its
// opening. While a retry of name is pending, another only replaces the
// offer it will push.
func (q *OfferQueue) RetryIn(ctx context.Context, name string, s *distribution.Signed, d time.Duration) {
	q.mu.Lock()
	_, pending := q.waiting[name]
	q.waiting[name] = s
	q.mu.Unlock()
	if pending {
		return
	}
	q.retries.Add(1)
	go func() {
		defer q.retries.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		q.mu.Lock()
		s := q.waiting[name]
		delete(q.waiting, name)
		q.mu.Unlock()
		if ctx.Err() == nil {
			_ = q.Push(s)
		}
	}()
}

// Succeeded resets the retry wait of a distribution.
func (q *OfferQueue) Succeeded(name string) {
	q.mu.Lock()
	delete(q.backoff, name)
	q.mu.Unlock()
}

// Wait waits for the retries started with RetryLater, which end with their
// ctx.
func (q *OfferQueue) Wait() { q.retries.Wait() }

// ReadOffers reads a parent's control stream into q until it fails: offers
// are queued, and error notices (an offer held until a send window opens,
// or a problem the parent reports) logged. A revocation list is ignored
// (see ReadParent). Anything else is a protocol error naming the parent.
func ReadOffers(control *Conn, q *OfferQueue, log *slog.Logger) error {
	return ReadParent(control, q, log, nil, nil)
}

// ReadParent is ReadOffers handing each revocation list the parent sends
// to revocations; nil ignores them. An error from revocations is logged,
// not fatal: a list that does not check out is the parent's problem, not a
// reason to stop receiving. Each Waves message is handed to waves; nil
// ignores them.
func ReadParent(control *Conn, q *OfferQueue, log *slog.Logger, revocations func(*Revocations) error, waves func(*Waves)) error {
	peer := control.Peer()
	for {
		msg, err := control.Receive()
		if err != nil {
			return err
		}
		switch msg := msg.(type) {
		case *Offer:
			if err := q.Push(msg.Signed); err != nil {
				return fmt.Errorf("%w: offer from %s: %v", ErrProtocol, peer, err)
			}
		case *Error:
			if msg.RetryAt > 0 {
				log.Info("parent holds an offer until its send window opens", "why", msg.Message)
				continue
			}
			log.Warn("parent reports an error", "err", msg.Message)
		case *Revocations:
			if revocations == nil {
				log.Debug("revocation list from the parent ignored: this node does not keep one")
				continue
			}
			if err := revocations(msg); err != nil {
				log.Warn("revocation list from the parent refused", "err", err)
			}
		case *Waves:
			if waves == nil {
				log.Debug("rollouts in waves from the parent ignored: this node has no subscribers of its own")
				continue
			}
			waves(msg)
		default:
			return fmt.Errorf("%w: %s sent %s on the control stream", ErrProtocol, peer, msg.msgType())
		}
	}
}
