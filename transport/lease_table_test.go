package transport

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
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

// A lease is the cluster's: whichever holder asks first has it, and
// another is refused while it runs.
func TestLeasesOnePerCluster(t *testing.T) {
	clock := newFakeNow()
	l := NewLeases(6*time.Second, clock.now)
	clock.add(6 * time.Second)
	if a := l.Acquire("web", "a#1"); !granted(a, "a#1") {
		t.Fatalf("Acquire(a) = %+v", a)
	}
	if b := l.Acquire("web", "b#1"); b.Granted || b.Holder != "a#1" {
		t.Errorf("Acquire(b) of the same cluster = %+v, want refused naming a#1", b)
	}
	// The same node in another process is another holder.
	if a2 := l.Acquire("web", "a#2"); a2.Granted {
		t.Errorf("Acquire(a#2) = %+v, want refused", a2)
	}
}

// openLeases opens the lease table in file, failing the test if it cannot.
func openLeases(t *testing.T, file string, clock *fakeNow) *Leases {
	t.Helper()
	l, err := OpenLeases(file, 6*time.Second, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLeasesSurviveRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	clock := newFakeNow()
	l := openLeases(t, file, clock) // no file yet: an empty table
	clock.add(6 * time.Second)
	a := l.Acquire("web", "a#1")
	x := l.Acquire("db", "x#1")
	if !granted(a, "a#1") || !granted(x, "x#1") {
		t.Fatalf("grants: %+v %+v", a, x)
	}
	l.Release("db", "x#1")
	// Renewals are not written: the file changes only with the holder.
	before, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	clock.add(2 * time.Second)
	l.Acquire("web", "a#1")
	if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
		t.Errorf("a renewal rewrote the file:\n%s\nthen\n%s", before, after)
	}

	// A restart 3 s later, while a's lease still runs.
	clock.add(3 * time.Second)
	l = openLeases(t, file, clock)
	if ok, _, _ := l.Valid("web", "a#1", a.Epoch); !ok {
		t.Error("the recorded holder's epoch is not valid after the restart")
	}
	if b := l.Acquire("web", "b#1"); b.Granted || b.Holder != "a#1" {
		t.Errorf("another node after the restart = %+v, want refused while a holds it", b)
	}
	if r := l.Acquire("web", "a#1"); !granted(r, "a#1") || r.Epoch != a.Epoch {
		t.Errorf("the recorded holder renewing after the restart = %+v, want granted under epoch %d", r, a.Epoch)
	}
	// Released before: nobody holds db, but the grace holds for everyone.
	if y := l.Acquire("db", "y#1"); y.Granted || !y.Until.Equal(clock.t.Add(6*time.Second)) {
		t.Errorf("db during the grace = %+v", y)
	}
	// The same node in a new process is not the holder: it waits.
	if a2 := l.Acquire("web", "a#2"); a2.Granted {
		t.Errorf("a new process of the holder's node = %+v, want refused", a2)
	}

	// The holder stops renewing: after its lease and the grace, another
	// gets it under a larger epoch, and a third restart knows that one.
	clock.add(6 * time.Second)
	b := l.Acquire("web", "b#1")
	if !granted(b, "b#1") || b.Epoch <= a.Epoch {
		t.Fatalf("Acquire(b) after the grace = %+v, a's epoch %d", b, a.Epoch)
	}
	y := l.Acquire("db", "y#1")
	if !granted(y, "y#1") || y.Epoch <= x.Epoch {
		t.Errorf("Acquire(y) after the grace = %+v, x's epoch %d", y, x.Epoch)
	}
	// Even with the clock set back, new epochs stay larger.
	clock.add(-time.Hour)
	l = openLeases(t, file, clock)
	if ok, _, _ := l.Valid("web", "a#1", a.Epoch); ok {
		t.Error("a's epoch valid again after b's grant and a restart")
	}
	l.Release("web", "b#1")
	clock.add(6 * time.Second)
	if c := l.Acquire("web", "c#1"); !granted(c, "c#1") || c.Epoch <= b.Epoch {
		t.Errorf("Acquire(c) with the clock set back = %+v, b's epoch %d", c, b.Epoch)
	}
}

func TestLeasesDamagedFile(t *testing.T) {
	for _, tc := range []struct{ name, data string }{
		{"empty", ""},
		{"not JSON", "holder a\n"},
		{"cut", `{"version": 1, "clusters": {"web": {"holder": "a#1", "ep`},
		{"unknown field", `{"version": 1, "clusters": {"web": {"holder": "a#1", "epoch": 5, "until": 7}}}`},
		{"other version", `{"version": 2, "clusters": {}}`},
		{"zero epoch", `{"version": 1, "clusters": {"web": {"holder": "a#1", "epoch": 0}}}`},
		{"bad name", `{"version": 1, "clusters": {"../web": {"holder": "a#1", "epoch": 5}}}`},
		{"two tables", `{"version": 1, "clusters": {}} {"version": 1, "clusters": {}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "leases.json")
			if err := os.WriteFile(file, []byte(tc.data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := OpenLeases(file, 6*time.Second, newFakeNow().now)
			if err == nil {
				t.Fatal("opened")
			}
			for _, want := range []string{file, "damaged", "remove it", "6s"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%q does not say %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("%q is more than one line", err)
			}
		})
	}
}

// A grant that cannot be recorded is not given: a restart would not know
// its holder.
func TestLeasesGrantNotRecorded(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	clock := newFakeNow()
	l := openLeases(t, file, clock)
	clock.add(6 * time.Second)
	// A directory in the file's place: the write fails, even for root.
	if err := os.MkdirAll(filepath.Join(file, "in-the-way"), 0o700); err != nil {
		t.Fatal(err)
	}
	a := l.Acquire("web", "a#1")
	if a.Granted || a.Err == nil || !strings.Contains(a.Err.Error(), "web") || !strings.Contains(a.Err.Error(), file) {
		t.Fatalf("Acquire with the file unwritable = %+v", a)
	}
	if h := l.Holder("web"); h != "" {
		t.Errorf("holder %q after a grant that was not recorded", h)
	}
	if err := os.RemoveAll(file); err != nil {
		t.Fatal(err)
	}
	if a := l.Acquire("web", "a#1"); !granted(a, "a#1") {
		t.Errorf("Acquire once writable = %+v", a)
	}
}
