package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"ted/distribution"
	"ted/pki"
	"ted/transport"
)

// sim is one simulated subscriber: a certificate of its own and, while
// the fleet runs, one session at a time with the distributor, kept by
// transport.RunParents as a real subscriber keeps it.
type sim struct {
	name string
	cred *transport.Credentials
	ep   *transport.Endpoint

	// Times, as time.Time.UnixNano, of the first admission (hello
	// answered), of the first offer of the fleet's revision and of the
	// moment it held every chunk of it; 0 until then.
	admitted, offered, fetched atomic.Int64
	// chunks counts the chunks stored of the fleet's revision (each checked
	// against its id by transport.Fetch).
	chunks atomic.Int64
}

// fleet is the simulated subscribers of one run and what they count
// together.
type fleet struct {
	addr    string
	channel string
	// target is the revision the run publishes: its offer and its chunks
	// are what offered and fetched time.
	target atomic.Pointer[revKey]
	sims   []*sim

	admitted, offered, fetched atomic.Int64

	// Failures, counted rather than hidden: dials refused by the
	// distributor, dials that failed otherwise (no answer, timeouts),
	// hellos that failed after the dial, sessions that ended while the
	// run was on, and fetches that failed (each retried).
	refused, dialFailed, helloFailed, dropped, fetchFailed atomic.Int64
	samples                                                errorSamples
	// stopping is set before the run ends its sessions on purpose, which
	// are then not counted as dropped.
	stopping atomic.Bool

	// publish, for a run against the reference server (reference.go), is
	// closed at the "publish", when each sim reads payload bytes from it;
	// nil for a run against a distributor.
	publish chan struct{}
	payload int
}

type revKey struct {
	name string
	rev  uint64
}

// errorSamples keeps the first few messages of each kind of failure, for
// the report.
type errorSamples struct {
	mu   sync.Mutex
	byOf map[string][]string
}

const maxSamples = 3

func (s *errorSamples) add(kind string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byOf == nil {
		s.byOf = map[string][]string{}
	}
	if len(s.byOf[kind]) < maxSamples {
		s.byOf[kind] = append(s.byOf[kind], err.Error())
	}
}

func (s *errorSamples) all() map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]string{}
	for k, v := range s.byOf {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// run keeps the sim connected until ctx ends, as a subscriber's daemon
// does: dial with backoff and jitter (1 s doubling to 30 s), reconnect
// when a session ends.
func (f *fleet) run(ctx context.Context, s *sim) {
	cfg := transport.DefaultParentsConfig()
	cfg.Addrs = []string{f.addr}
	// The failures are counted by dial and session; RunParents's lines
	// for 10,000 sessions would drown them.
	cfg.Logger = slog.New(slog.DiscardHandler)
	transport.RunParents(ctx, cfg, func(ctx context.Context, addr string) (transport.Session, error) {
		sess, err := s.ep.Dial(ctx, addr, s.cred, pki.RoleDistributor)
		if err != nil && ctx.Err() == nil {
			if refusal(err) {
				f.refused.Add(1)
				f.samples.add("refused dial", err)
			} else {
				f.dialFailed.Add(1)
				f.samples.add("failed dial", err)
			}
		}
		return sess, err
	}, func(ctx context.Context, sess transport.Session) error {
		session := f.session
		if f.publish != nil {
			session = f.refSession
		}
		welcomed, err := session(ctx, s, sess)
		// A session whose hello failed was never admitted: counted as a
		// failed hello, not as dropped.
		if welcomed && ctx.Err() == nil && !f.stopping.Load() {
			f.dropped.Add(1)
			if err == nil {
				err = errors.New("session ended without an error")
			}
			f.samples.add("dropped session", err)
		}
		return err
	}, nil)
}

// refusal tells a dial the distributor refused (its accept queue full:
// CONNECTION_REFUSED; or its accept callback: TED's refusal) from one that
// failed otherwise.
func refusal(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "CONNECTION_REFUSED") || strings.Contains(msg, "refused:")
}

// session runs one session as subscriber.Subscriber.runParent does: hello,
// a status report at once, offers read into a queue, each offer's chunks
// fetched on 2 streams and the outcome reported. welcomed is whether the
// hello was answered.
func (f *fleet) session(ctx context.Context, s *sim, sess transport.Session) (welcomed bool, err error) {
	control, _, err := transport.ClientHello(ctx, sess, &transport.Hello{Name: s.name, Agent: "bench/fleet", Channels: []string{f.channel}})
	if err != nil {
		if ctx.Err() == nil {
			f.helloFailed.Add(1)
			f.samples.add("failed hello", err)
		}
		return false, err
	}
	defer control.Close()
	stop := context.AfterFunc(ctx, func() { control.Close() })
	defer stop()
	if s.admitted.CompareAndSwap(0, time.Now().UnixNano()) {
		f.admitted.Add(1)
	}
	var (
		mu    sync.Mutex
		state []transport.RevisionState
	)
	report := func(st *transport.RevisionState) error {
		mu.Lock()
		if st != nil {
			state = []transport.RevisionState{*st}
		}
		msg := &transport.Status{Role: "single", ActiveNode: s.name, Revisions: state}
		mu.Unlock()
		return control.Send(msg)
	}
	if err := report(nil); err != nil {
		return true, err
	}
	queue := transport.NewOfferQueue()
	g, ctx := errgroup.WithContext(ctx)
	defer queue.Wait()
	g.Go(func() error {
		defer sess.Close(nil)
		return transport.ReadOffers(control, queue, slog.New(slog.DiscardHandler))
	})
	g.Go(func() error {
		defer sess.Close(nil)
		for signed := queue.Next(ctx); signed != nil; signed = queue.Next(ctx) {
			m, err := signed.Manifest()
			if err != nil {
				return fmt.Errorf("offer: %w", err)
			}
			key := revKey{m.Name, m.Revision}
			target := f.target.Load()
			if target == nil || key != *target {
				continue // not this run's revision
			}
			if s.offered.CompareAndSwap(0, time.Now().UnixNano()) {
				f.offered.Add(1)
			}
			if s.fetched.Load() != 0 {
				continue // offered again after a reconnect: held already
			}
			if err := f.receive(ctx, s, sess, m, report); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				f.fetchFailed.Add(1)
				f.samples.add("failed fetch", err)
				queue.RetryLater(ctx, m.Name, signed, err, time.Now(), 5*time.Second, 5*time.Minute)
			}
		}
		return nil
	})
	return true, g.Wait()
}

// receive fetches every chunk of m and reports the revision received, as
// a subscriber does before it extracts.
func (f *fleet) receive(ctx context.Context, s *sim, sess transport.Session, m *distribution.Manifest, report func(*transport.RevisionState) error) error {
	ids := m.ChunkIDs()
	st := transport.RevisionState{Name: m.Name, Revision: m.Revision, Version: m.Version, State: "receiving", Chunks: len(ids)}
	if err := report(&st); err != nil {
		return err
	}
	s.chunks.Store(0)
	sink := countingSink{&s.chunks}
	if err := transport.Fetch(ctx, sess, ids, sink, transport.DefaultFetchOptions()); err != nil {
		return err
	}
	if got := s.chunks.Load(); got != int64(len(ids)) {
		return fmt.Errorf("fetch of %s@%d stored %d chunks of %d", m.Name, m.Revision, got, len(ids))
	}
	if s.fetched.CompareAndSwap(0, time.Now().UnixNano()) {
		f.fetched.Add(1)
	}
	st.State, st.HaveChunks = "received", len(ids)
	return report(&st)
}

// countingSink counts the chunks that Fetch checked and stored, and drops
// their bytes: the fleet holds no store.
type countingSink struct{ n *atomic.Int64 }

// HasChunk says none is held: each run fetches every chunk.
func (c countingSink) HasChunk(distribution.ChunkID) (bool, error) { return false, nil }

func (c countingSink) PutChunk(distribution.ChunkID, []byte) error {
	c.n.Add(1)
	return nil
}
