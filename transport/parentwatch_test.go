package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"ted/pki"
)

// watchedParents runs RunParents with a watch over a dial and a run that
// the test switches: each address answers, refuses at admission, refuses
// at the hello, or does not answer.
type watchedParents struct {
	mu   sync.Mutex
	mode map[string]string // "", "down", "admission", "hello"
	w    *ParentWatch
}

func (p *watchedParents) set(addr, mode string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode[addr] = mode
}

func (p *watchedParents) get(addr string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode[addr]
}

func (p *watchedParents) dial(_ context.Context, addr string) (Session, error) {
	switch p.get(addr) {
	case "down":
		return nil, fmt.Errorf("dial %s: no answer (is the node up and its UDP port open?)", addr)
	case "admission":
		return nil, fmt.Errorf("dial %s (dist-%s): %w", addr, addr, &RefusedError{Message: "not authorised: subscriber web-01 is not a child of any channel of dist-" + addr})
	}
	child, _ := NewPipe(Identity{Name: "web-01", Role: pki.RoleSubscriber}, Identity{Name: "dist-" + addr, Role: pki.RoleDistributor})
	return child, nil
}

func (p *watchedParents) run(ctx context.Context, sess Session) error {
	addr := strings.TrimPrefix(sess.Peer().Name, "dist-")
	if p.get(addr) == "hello" {
		return remote(sess.Peer().Name, &Error{Code: CodeUnauthorized, Message: "channel db is not carried by " + sess.Peer().Name})
	}
	p.w.Welcomed() // the hello accepted, as a daemon's run says
	<-ctx.Done()
	return nil
}

func (p *watchedParents) start(t *testing.T, addrs ...string) *ParentWatch {
	t.Helper()
	w := NewParentWatch()
	p.w = w
	cfg := ParentsConfig{Addrs: addrs, RetryMin: time.Millisecond, RetryMax: 20 * time.Millisecond, PreferEvery: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Watch: w}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunParents(ctx, cfg, p.dial, p.run, nil)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// waitState polls w until ok says its state is the one wanted.
func waitState(t *testing.T, w *ParentWatch, what string, ok func(ParentState) bool) ParentState {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := w.State()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10 s; state %+v", what, st)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestParentWatchRefusedAtAdmission(t *testing.T) {
	p := &watchedParents{mode: map[string]string{"a": "admission"}}
	w := p.start(t, "a")
	st := waitState(t, w, "settled refusal", func(st ParentState) bool { return st.Settled })
	want := "parent dist-a (a) refuses this node: not authorised: subscriber web-01 is not a child of any channel of dist-a"
	if !st.Refused || st.Problem != want || st.Addr != "" {
		t.Fatalf("state %+v, want refused with problem %q", st, want)
	}
	// Once the parent lists it, the node connects and the problem goes.
	p.set("a", "")
	st = waitState(t, w, "connection", func(st ParentState) bool { return st.Addr != "" })
	if st.Addr != "a" || st.Peer != "dist-a" || st.Problem != "" || st.Settled || st.Refused {
		t.Fatalf("connected state %+v, want a (dist-a) and no problem", st)
	}
}

func TestParentWatchRefusedAtHello(t *testing.T) {
	p := &watchedParents{mode: map[string]string{"a": "hello"}}
	w := p.start(t, "a")
	st := waitState(t, w, "settled refusal", func(st ParentState) bool { return st.Settled })
	want := "parent dist-a (a) refuses this node: channel db is not carried by dist-a"
	if !st.Refused || st.Problem != want {
		t.Fatalf("state %+v, want refused with problem %q", st, want)
	}
}

func TestParentWatchUnreachable(t *testing.T) {
	p := &watchedParents{mode: map[string]string{"a": "down", "b": "admission"}}
	w := p.start(t, "a", "b")
	st := waitState(t, w, "settled failure", func(st ParentState) bool { return st.Settled })
	for _, part := range []string{
		"parent unreachable: dial a: no answer",
		"parent dist-b (b) refuses this node: not authorised",
	} {
		if !strings.Contains(st.Problem, part) {
			t.Fatalf("problem %q lacks %q", st.Problem, part)
		}
	}
	if strings.Index(st.Problem, "dial a") > strings.Index(st.Problem, "dist-b") {
		t.Fatalf("problem %q: parents out of their configured order", st.Problem)
	}
}

// TestParentWatchNotSettledBeforeARound: before every parent has been
// tried, the watch does not call the failure settled, so a node starting
// is not reported unhealthy for the first parent's failure.
func TestParentWatchNotSettledBeforeARound(t *testing.T) {
	w := NewParentWatch()
	w.start([]string{"a", "b"})
	w.failed("a", errors.New("dial a: no answer"))
	if st := w.State(); st.Settled || !strings.Contains(st.Problem, "dial a") {
		t.Fatalf("state %+v: want the failure shown but not settled", st)
	}
	w.settle()
	if st := w.State(); !st.Settled {
		t.Fatalf("state %+v: want settled after the round", st)
	}
	var nilWatch *ParentWatch
	nilWatch.failed("a", errors.New("x"))
	if st := nilWatch.State(); st != (ParentState{}) {
		t.Fatalf("nil watch state %+v", st)
	}
}

// A parent that refuses at the hello beside one that is down: once
// settled, the watch stays unhealthy through every later round (the
// refusing parent's dial succeeds each time, but its hello never does),
// and names both parents throughout.
func TestParentWatchNoFlapOnHelloRefusal(t *testing.T) {
	p := &watchedParents{mode: map[string]string{"a": "down", "b": "hello"}}
	w := p.start(t, "a", "b")
	waitState(t, w, "settled", func(st ParentState) bool { return st.Settled })
	for i := range 3000 {
		st := w.State()
		if !st.Settled || st.Addr != "" || !strings.Contains(st.Problem, "(a)") && !strings.Contains(st.Problem, " a:") && !strings.Contains(st.Problem, "dial a") || !strings.Contains(st.Problem, "dist-b (b) refuses") {
			t.Fatalf("sample %d: state %+v; want settled, naming a and b", i, st)
		}
		time.Sleep(100 * time.Microsecond) // sampling, not synchronising
	}
}
