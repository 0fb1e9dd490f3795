package publisher

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"golang.org/x/sync/errgroup"

	"ted/distribution"
	"ted/store"
	"ted/transport"
)

// Progress reports a push as it goes.
type Progress struct {
	// SentChunks and SentBytes count the chunks served so far.
	SentChunks int
	SentBytes  int64
}

// PushResult is what a push did.
type PushResult struct {
	Name     string `json:"name"`
	Revision uint64 `json:"revision"`
	Version  string `json:"version"`
	// Distributor is the name the distributor's certificate gives.
	Distributor string `json:"distributor"`
	// SentChunks and SentBytes count what travelled: only the chunks the
	// distributor lacked.
	SentChunks int   `json:"sent_chunks"`
	SentBytes  int64 `json:"sent_bytes"`
	// AlreadyStored: the distributor held the revision already.
	AlreadyStored bool `json:"already_stored"`
}

// Push offers a stored revision to the distributor at the other end of
// sess and serves it the chunks it asks for, until it answers. progress,
// if not nil, is called after every chunk sent (from several goroutines,
// one at a time).
func Push(ctx context.Context, sess transport.Session, name, agent string, st store.Store, signed *distribution.Signed, progress func(Progress), log *slog.Logger) (PushResult, error) {
	m, err := signed.Manifest()
	if err != nil {
		return PushResult{}, err
	}
	res := PushResult{Name: m.Name, Revision: m.Revision, Version: m.Version, Distributor: sess.Peer().Name}
	control, _, err := transport.ClientHello(ctx, sess, &transport.Hello{Name: name, Agent: agent})
	if err != nil {
		return res, err
	}
	defer control.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { control.Close() })
	defer stop()
	var sent Progress
	var sentMu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return transport.ServeChunks(gctx, sess, transport.StoreProvider(st), func(n int) {
			sentMu.Lock()
			defer sentMu.Unlock()
			sent.SentChunks++
			sent.SentBytes += int64(n)
			p := sent
			if progress != nil {
				progress(p)
			}
		}, log)
	})
	var answer error
	g.Go(func() error {
		defer cancel() // the answer ends serving
		if err := control.Send(&transport.Offer{Signed: signed}); err != nil {
			answer = err
			return nil
		}
		msg, err := control.Receive()
		if err != nil {
			// Say why: the push was cancelled, or the session ended and
			// with what reason, rather than the closed stream it left.
			switch {
			case ctx.Err() != nil:
				err = context.Cause(ctx)
			case sess.Context().Err() != nil:
				err = context.Cause(sess.Context())
			}
			answer = fmt.Errorf("waiting for %s to store %s@%d: %w", sess.Peer().Name, m.Name, m.Revision, err)
			return nil
		}
		switch msg := msg.(type) {
		case *transport.Result:
			if msg.Name != m.Name || msg.Revision != m.Revision {
				answer = fmt.Errorf("%w: %s answered for %s@%d", transport.ErrProtocol, sess.Peer().Name, msg.Name, msg.Revision)
				return nil
			}
			res.AlreadyStored = msg.AlreadyStored
		case *transport.Error:
			answer = fmt.Errorf("%s refused %s@%d: %w", sess.Peer().Name, m.Name, m.Revision, msg)
		default:
			answer = fmt.Errorf("%w: %s answered with %T", transport.ErrProtocol, sess.Peer().Name, msg)
		}
		return nil
	})
	_ = g.Wait()
	res.SentChunks, res.SentBytes = sent.SentChunks, sent.SentBytes
	return res, answer
}
