package transport

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"
)

// DialFunc dials a parent at addr and returns the authenticated session.
type DialFunc func(ctx context.Context, addr string) (Session, error)

// ParentsConfig tunes RunParents.
type ParentsConfig struct {
	// Addrs are the parents in order of preference.
	Addrs []string
	// RetryMin and RetryMax bound the wait after every parent failed; it
	// doubles from RetryMin on each round, and each wait is drawn at random
	// up to it (full jitter), so the thousands of children of a restarted
	// distributor do not all dial it at once, nor again all at once when
	// it could not take them all.
	RetryMin, RetryMax time.Duration
	// PreferEvery is how often a child connected to a fallback parent
	// tries the ones it prefers, to go back when they return.
	PreferEvery time.Duration
	Logger      *slog.Logger
	// Watch, if set, is told every connection and failure, for the
	// node's health check, status and metrics.
	Watch *ParentWatch
}

// DefaultParentsConfig returns the defaults: retries from 1 s to 30 s, and a
// look for a preferred parent every 30 s.
func DefaultParentsConfig() ParentsConfig {
	return ParentsConfig{RetryMin: time.Second, RetryMax: 30 * time.Second, PreferEvery: 30 * time.Second, Logger: slog.Default()}
}

// errPreferred ends a session with a fallback parent when a preferred one is
// reachable again.
var errPreferred = errors.New("moving back to a preferred parent")

// RunParents keeps this node connected to one parent: it dials cfg.Addrs in
// order and runs run on the first session that succeeds; when that session
// ends it starts again from the first address. While connected to a fallback
// parent it tries the preferred ones every PreferEvery and moves back to the
// first that answers. It returns when ctx ends. connected, if not nil, is
// told the address in use ("" while none).
func RunParents(ctx context.Context, cfg ParentsConfig, dial DialFunc, run func(ctx context.Context, sess Session) error, connected func(addr string)) {
	if connected == nil {
		connected = func(string) {}
	}
	wait := cfg.RetryMin
	// backoff waits up to wait, doubling it for next time; false when ctx
	// ended meanwhile.
	backoff := func() bool {
		d := fullJitter(wait)
		wait = min(2*wait, cfg.RetryMax)
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	var next Session // a preferred parent found while on a fallback
	nextIndex := 0
	// shunned holds parents that refused this node (a session that ended
	// soon after it began, with an error) until when they are skipped, so a
	// misconfigured first parent does not keep a child from the others.
	shunned := map[string]time.Time{}
	cfg.Watch.start(cfg.Addrs)
	defer cfg.Watch.disconnected("", "", nil)
	for ctx.Err() == nil {
		sess, index := next, nextIndex
		next = nil
		if sess == nil {
			sess, index = dialFirst(ctx, cfg, dial, len(cfg.Addrs), shunned, cfg.Watch.failed)
		}
		if sess == nil {
			connected("")
			cfg.Watch.settle()
			cfg.Logger.Warn("no parent reachable; retrying with backoff", "parents", cfg.Addrs, "next_wait_max", wait)
			if !backoff() {
				return
			}
			continue
		}
		addr := cfg.Addrs[index]
		start := time.Now()
		connected(addr)
		cfg.Watch.connected(addr, sess.Peer().Name)
		cfg.Logger.Info("connected to parent", "peer", sess.Peer().Name, "addr", addr)
		sctx, cancel := context.WithCancelCause(ctx)
		probed := make(chan struct{})
		go func() {
			defer close(probed)
			if index == 0 {
				return
			}
			t := time.NewTicker(cfg.PreferEvery)
			defer t.Stop()
			for {
				select {
				case <-sctx.Done():
					return
				case <-t.C:
				}
				if s, i := dialFirst(sctx, cfg, dial, index, shunned, nil); s != nil {
					next, nextIndex = s, i
					cancel(errPreferred)
					return
				}
			}
		}()
		err := run(sctx, sess)
		cancel(nil)
		<-probed
		sess.Close(context.Cause(sctx))
		if ctx.Err() != nil {
			if next != nil {
				next.Close(ctx.Err())
			}
			return
		}
		var failure error
		if next == nil && !Ended(err) {
			failure = err
		}
		cfg.Watch.disconnected(addr, sess.Peer().Name, failure)
		if next != nil {
			cfg.Logger.Info("moving back to a preferred parent", "from", addr, "to", cfg.Addrs[nextIndex])
			wait = cfg.RetryMin
			continue
		}
		if Ended(err) {
			cfg.Logger.Info("parent session ended", "peer", sess.Peer().Name, "addr", addr, "reason", err)
		} else {
			cfg.Logger.Warn("parent session ended", "peer", sess.Peer().Name, "addr", addr, "err", err)
		}
		connected("")
		if time.Since(start) >= cfg.RetryMax {
			// It had been working: reconnect soon, within RetryMin, and
			// not at the same instant as every other child of a parent
			// that restarted.
			wait = cfg.RetryMin
			if !backoff() {
				return
			}
			wait = cfg.RetryMin
			continue
		}
		if !Ended(err) {
			shunned[addr] = time.Now().Add(cfg.RetryMax)
			if len(shunned) < len(cfg.Addrs) || anyExpired(shunned) {
				continue // try the others first
			}
		}
		// A session that ended soon after it began (refused at the hello, a
		// parent that keeps failing) is retried with the same backoff as an
		// unreachable one, so a refused child does not hammer its parent.
		// It settles the watch only if it failed: a clean end is no fault.
		if failure != nil {
			cfg.Watch.settle()
		}
		if !backoff() {
			return
		}
	}
}

// fullJitter draws a wait from zero to limit, uniformly: children that
// failed together spread their next tries over the whole interval, where a
// wait of limit/2 plus jitter would still bunch them in its second half.
func fullJitter(limit time.Duration) time.Duration {
	if limit <= 0 {
		return 0
	}
	return rand.N(limit + 1)
}

// anyExpired reports whether some shunned parent may be tried again.
func anyExpired(shunned map[string]time.Time) bool {
	for _, until := range shunned {
		if time.Now().After(until) {
			return true
		}
	}
	return false
}

// dialFirst dials the first n addresses in order, skipping those shunned
// until later, and returns the first session that succeeds with its index.
// When every parent is shunned (n is all of them), all are tried: the
// caller has backed off already.
func dialFirst(ctx context.Context, cfg ParentsConfig, dial DialFunc, n int, shunned map[string]time.Time, failed func(addr string, err error)) (Session, int) {
	skip := func(addr string) bool {
		until, ok := shunned[addr]
		return ok && time.Now().Before(until)
	}
	allShunned := n == len(cfg.Addrs)
	for _, addr := range cfg.Addrs {
		allShunned = allShunned && skip(addr)
	}
	for i, addr := range cfg.Addrs[:n] {
		if skip(addr) && !allShunned {
			continue
		}
		sess, err := dial(ctx, addr)
		if err == nil {
			return sess, i
		}
		if ctx.Err() != nil {
			return nil, 0
		}
		cfg.Logger.Warn("parent unreachable", "addr", addr, "err", err)
		if failed != nil {
			failed(addr, err)
		}
	}
	return nil, 0
}
