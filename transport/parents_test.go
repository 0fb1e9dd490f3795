package transport

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"ted/pki"
)

// fakeParents dials in-memory sessions; each address can be down, refuse
// (its session ends at once with an error), or serve until the run ends.
type fakeParents struct {
	mu     sync.Mutex
	down   map[string]bool
	refuse map[string]bool
	dials  []string
}

func (f *fakeParents) dial(_ context.Context, addr string) (Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials = append(f.dials, addr)
	if f.down[addr] {
		return nil, errors.New("no answer")
	}
	child, _ := NewPipe(Identity{Name: "web-01", Role: pki.RoleSubscriber}, Identity{Name: addr, Role: pki.RoleDistributor})
	return child, nil
}

func (f *fakeParents) set(addr string, down, refuse bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down[addr], f.refuse[addr] = down, refuse
}

func (f *fakeParents) refuses(addr string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refuse[addr]
}

// runParentsTest runs RunParents over f and returns the addresses it
// reports connected, in order.
func runParentsTest(t *testing.T, f *fakeParents, addrs ...string) (connected <-chan string, stop func()) {
	t.Helper()
	cfg := ParentsConfig{Addrs: addrs, RetryMin: time.Millisecond, RetryMax: time.Hour, PreferEvery: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan string, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunParents(ctx, cfg, f.dial, func(ctx context.Context, sess Session) error {
			if f.refuses(sess.Peer().Name) {
				return ErrUnauthorized
			}
			<-ctx.Done()
			return nil
		}, func(addr string) {
			if addr != "" {
				events <- addr
			}
		})
	}()
	return events, func() { cancel(); <-done }
}

func nextConnected(t *testing.T, events <-chan string) string {
	t.Helper()
	select {
	case addr := <-events:
		return addr
	case <-time.After(10 * time.Second):
		t.Fatal("no parent connected within 10 s")
		return ""
	}
}

func TestRunParentsFailsOverAndBack(t *testing.T) {
	f := &fakeParents{down: map[string]bool{"a": true}, refuse: map[string]bool{}}
	events, stop := runParentsTest(t, f, "a", "b")
	defer stop()
	if got := nextConnected(t, events); got != "b" {
		t.Fatalf("connected to %s, want b while a is down", got)
	}
	f.set("a", false, false)
	if got := nextConnected(t, events); got != "a" {
		t.Fatalf("connected to %s, want a once it is back", got)
	}
}

// TestRunParentsSkipsRefusingParent checks that a parent refusing this
// node at the hello is skipped for the next one at once, not retried
// first: with RetryMax an hour, a backoff would stall the test.
func TestRunParentsSkipsRefusingParent(t *testing.T) {
	f := &fakeParents{down: map[string]bool{}, refuse: map[string]bool{"a": true}}
	events, stop := runParentsTest(t, f, "a", "b")
	if got := nextConnected(t, events); got != "a" {
		t.Fatalf("first connected to %s, want a", got)
	}
	if got := nextConnected(t, events); got != "b" {
		t.Fatalf("then connected to %s, want b", got)
	}
	stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	var toA int
	for _, d := range f.dials {
		if d == "a" {
			toA++
		}
	}
	// The probe for a preferred parent skips a shunned one too.
	if toA != 1 {
		t.Fatalf("dialled the refusing parent %d times (%v), want once", toA, f.dials)
	}
}

// TestFullJitter: the waits of children that failed together cover the
// whole interval up to the backoff, not only its second half.
func TestFullJitter(t *testing.T) {
	const limit = time.Second
	lowest, highest := limit, time.Duration(0)
	for range 1000 {
		d := fullJitter(limit)
		if d < 0 || d > limit {
			t.Fatalf("fullJitter(%v) = %v, outside [0, %v]", limit, d, limit)
		}
		lowest, highest = min(lowest, d), max(highest, d)
	}
	if lowest > limit/10 || highest < limit*9/10 {
		t.Errorf("1000 waits spread over [%v, %v] only, want [0, %v]", lowest, highest, limit)
	}
	if d := fullJitter(0); d != 0 {
		t.Errorf("fullJitter(0) = %v", d)
	}
}
