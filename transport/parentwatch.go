package transport

import (
	"errors"
	"fmt"
	"strings"
	"sync"
)

// RefusedError is a listener's refusal of this node at admission (its
// certificate is listed by no channel, or revoked), as the dialer receives
// it: Message is the listener's own words.
type RefusedError struct {
	Message string
}

func (e *RefusedError) Error() string { return "refused: " + e.Message }

// ParentWatch records how a child's link to its parents goes, for its
// health check, its status and its metrics: RunParents fills it in when
// ParentsConfig.Watch is set. It is safe for concurrent use; a nil
// *ParentWatch records nothing and reports an empty ParentState.
type ParentWatch struct {
	mu    sync.Mutex
	addrs []string
	addr  string // the parent connected now, its hello accepted
	peer  string
	// dialled is the parent dialled whose hello is not accepted yet: not
	// connected as far as health goes (a parent that refuses at the hello
	// must not look like a working one meanwhile).
	dialled, dialledPeer string
	// failures are each parent's last failure since this node was last
	// connected (or since the start).
	failures map[string]parentFailure
	// settled: since the start, or since the last session ended, every
	// parent was tried (a whole round of dials, or a refusal that left
	// none to try before the backoff) and none took this node.
	settled bool
}

// parentFailure is one parent's last failure.
type parentFailure struct {
	peer    string // its certificate's name, if the handshake got that far
	refusal string // its refusal, in its words; "" if it did not refuse
	err     error
}

// NewParentWatch returns an empty watch.
func NewParentWatch() *ParentWatch {
	return &ParentWatch{failures: map[string]parentFailure{}}
}

// ParentState is what a ParentWatch knows at one moment.
type ParentState struct {
	// Addr is the address of the parent connected now; "" while none is.
	Addr string
	// Peer is the name in the connected parent's certificate.
	Peer string
	// Problem says why no parent is connected, one clause per parent
	// that failed since the last connection, in the order of the
	// configured parents; "" while connected or before any failure.
	Problem string
	// Refused: a parent refused this node (rather than not answering).
	Refused bool
	// Settled: every parent has been tried since the start (or since the
	// last session ended) and none took this node. Problem is then a
	// fault, not a start-up or a reconnection still under way.
	Settled bool
}

// start resets the watch as RunParents begins.
func (w *ParentWatch) start(addrs []string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.addrs = addrs
	w.addr, w.peer, w.settled = "", "", false
	w.failures = map[string]parentFailure{}
}

// connected records the parent dialled now; Welcomed, once its hello is
// accepted, makes it the parent connected.
func (w *ParentWatch) connected(addr, peer string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dialled, w.dialledPeer = addr, peer
}

// Welcomed records that the parent dialled last accepted this node's
// hello: it is connected, and every failure is forgotten. The session's
// runner (RunParents' run) calls it.
func (w *ParentWatch) Welcomed() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dialled == "" {
		return
	}
	w.addr, w.peer, w.settled = w.dialled, w.dialledPeer, false
	clear(w.failures)
}

// disconnected records that the session with the parent ended (err nil:
// ended cleanly or by this node); a failure of it is recorded as one of
// that parent's. The end of a session that had been welcomed starts a new
// grace (not settled); one refused at its hello keeps the state before it.
func (w *ParentWatch) disconnected(addr, peer string, err error) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.addr != "" {
		w.settled = false
	}
	w.addr, w.peer, w.dialled, w.dialledPeer = "", "", "", ""
	if err != nil {
		w.failures[addr] = newParentFailure(peer, err)
	}
}

// failed records a failed dial of addr.
func (w *ParentWatch) failed(addr string, err error) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failures[addr] = newParentFailure("", err)
}

// settle records that no parent took this node in a whole round.
func (w *ParentWatch) settle() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.addr == "" {
		w.settled = true
	}
}

func newParentFailure(peer string, err error) parentFailure {
	f := parentFailure{peer: peer, err: err}
	if refused, ok := errors.AsType[*RefusedError](err); ok {
		f.refusal = refused.Message
	} else if wire, ok := errors.AsType[*Error](err); ok && wire.Code == CodeUnauthorized {
		// A refusal; other errors of the parent's are failures, not
		// "refuses this node".
		f.refusal = wire.Message
	}
	if f.peer == "" {
		// A refusal at admission names the parent in the dial error:
		// "dial ADDR (NAME): refused: ...".
		if _, rest, ok := strings.Cut(err.Error(), " ("); ok && strings.HasPrefix(err.Error(), "dial ") {
			if name, _, ok := strings.Cut(rest, ")"); ok && name != "" && !strings.Contains(name, " ") {
				f.peer = name
			}
		}
	}
	return f
}

// describe is the failure of the parent at addr in one clause.
func (f parentFailure) describe(addr string) string {
	who := addr
	if f.peer != "" {
		who = fmt.Sprintf("%s (%s)", f.peer, addr)
	}
	if f.refusal != "" {
		return fmt.Sprintf("parent %s refuses this node: %s", who, f.refusal)
	}
	text := f.err.Error()
	if strings.Contains(text, addr) {
		return "parent unreachable: " + text // transport's errors name the address
	}
	return fmt.Sprintf("parent %s: %s", who, text)
}

// State reports what the watch knows now.
func (w *ParentWatch) State() ParentState {
	if w == nil {
		return ParentState{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	st := ParentState{Addr: w.addr, Peer: w.peer}
	if w.addr != "" {
		return st
	}
	var clauses []string
	for _, addr := range w.addrs {
		f, ok := w.failures[addr]
		if !ok {
			continue
		}
		clauses = append(clauses, f.describe(addr))
		st.Refused = st.Refused || f.refusal != ""
	}
	st.Problem = strings.Join(clauses, "; ")
	st.Settled = w.settled && st.Problem != ""
	if st.Settled && !st.Refused && len(w.addrs) > 1 {
		st.Problem = "no parent reachable: " + st.Problem
	}
	return st
}
