package transport

import (
	"testing"
	"time"
)

type fakeNow struct{ t time.Time }

func (f *fakeNow) now() time.Time             { return f.t }
func (f *fakeNow) add(d time.Duration)        { f.t = f.t.Add(d) }
func newFakeNow() *fakeNow                    { return &fakeNow{t: time.Unix(1_800_000_000, 0)} }
func granted(a LeaseAnswer, node string) bool { return a.Granted && a.Holder == node }

func TestLeases(t *testing.T) {
	clock := newFakeNow()
	l := NewLeases(6*time.Second, clock.now)

	// Nothing during the grace period after a start.
	if a := l.Acquire("web", "a"); a.Granted || !a.Until.Equal(clock.t.Add(6*time.Second)) {
		t.Fatalf("Acquire during grace = %+v", a)
	}
	clock.add(6 * time.Second)
	a := l.Acquire("web", "a")
	if !granted(a, "a") {
		t.Fatalf("Acquire(a) = %+v", a)
	}
	// Another node is refused while a's lease runs, even just before it ends.
	clock.add(5999 * time.Millisecond)
	if b := l.Acquire("web", "b"); b.Granted || b.Holder != "a" {
		t.Fatalf("Acquire(b) while a holds = %+v", b)
	}
	// Renewal keeps the epoch.
	if r := l.Acquire("web", "a"); !granted(r, "a") || r.Epoch != a.Epoch {
		t.Fatalf("renewal = %+v, epoch %d", r, a.Epoch)
	}
	if ok, _, _ := l.Valid("web", "a", a.Epoch); !ok {
		t.Error("a's renewed lease not valid")
	}
	// Once it expires, b gets it under a larger epoch, and a's epoch is
	// no longer valid.
	_, _, changed := l.Valid("web", "a", a.Epoch)
	clock.add(6 * time.Second)
	b := l.Acquire("web", "b")
	if !granted(b, "b") || b.Epoch <= a.Epoch {
		t.Fatalf("Acquire(b) after expiry = %+v, a's epoch %d", b, a.Epoch)
	}
	select {
	case <-changed:
	default:
		t.Error("a new holder did not signal the change")
	}
	if ok, _, _ := l.Valid("web", "a", a.Epoch); ok {
		t.Error("a's old epoch still valid")
	}
	if l.Holder("web") != "b" {
		t.Errorf("Holder = %q", l.Holder("web"))
	}
	// Release hands it over at once; other clusters are independent.
	if x := l.Acquire("db", "x"); !granted(x, "x") {
		t.Errorf("another cluster: %+v", x)
	}
	l.Release("web", "a") // not the holder: nothing
	if l.Holder("web") != "b" {
		t.Error("a released b's lease")
	}
	l.Release("web", "b")
	if c := l.Acquire("web", "c"); !granted(c, "c") || c.Epoch <= b.Epoch {
		t.Errorf("Acquire(c) after release = %+v", c)
	}
	if l.Holder("db") != "x" {
		t.Error("db's lease changed")
	}
}
