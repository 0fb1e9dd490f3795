package subscriber

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ted/distribution"
	"ted/store"
)

// publishActions builds app@rev with pre and post actions.
func (p *fakeParent) publishActions(rev uint64, pre, post []string) *distribution.Signed {
	p.t.Helper()
	m, _, err := distribution.BuildDir(context.Background(), writeTree(p.t, appRev1()), distribution.BuildOptions{
		Name: "app", Revision: rev, Version: "1.0.0", Channels: []string{"web"}, Pre: pre, Post: post,
		Created: time.Unix(1_700_000_000+int64(rev), 0),
	}, p.store)
	if err != nil {
		p.t.Fatal(err)
	}
	s, err := distribution.Sign(m, daemonKey())
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.store.AddRevision(s, m); err != nil && !errors.Is(err, store.ErrExists) {
		p.t.Fatal(err)
	}
	return s
}

func TestPreActionFailureAborts(t *testing.T) {
	p := newFakeParent(t)
	p.setGreet(p.publishActions(1, []string{"echo stopping the service; echo it refused >&2; exit 3"}, nil))
	d := newDaemon(t)
	s := d.start(p.dial)
	r := waitState(t, s.Subscriber, "app", 1, StateFailed)
	for _, want := range []string{"pre-action", "exited 3", "stopping the service", "it refused"} {
		if !strings.Contains(r.Error, want) {
			t.Errorf("error %q does not contain %q", r.Error, want)
		}
	}
	if _, err := os.Stat(d.target()); !os.IsNotExist(err) {
		t.Errorf("a failed pre-action left the target behind: %v", err)
	}
}

func TestPostActionSeesEnvironment(t *testing.T) {
	p := newFakeParent(t)
	p.setGreet(p.publishActions(1, []string{`test ! -e "$TED_TARGET/app.bin"`},
		[]string{`echo "$TED_NAME $TED_REVISION $TED_VERSION $TED_PHASE $(pwd)" > "$TED_TARGET/.post"`}))
	d := newDaemon(t)
	s := d.start(p.dial)
	waitState(t, s.Subscriber, "app", 1, StateExtracted)
	got, err := os.ReadFile(filepath.Join(d.target(), ".post"))
	if err != nil {
		t.Fatal(err)
	}
	want := "app 1 1.0.0 post " + d.target() + "\n"
	if string(got) != want {
		t.Errorf("post-action saw %q, want %q", got, want)
	}
}

func TestActionTimeout(t *testing.T) {
	p := newFakeParent(t)
	p.setGreet(p.publishActions(1, []string{"sleep 60 & wait"}, nil))
	d := newDaemon(t)
	d.cfg.ActionTimeout = 200 * time.Millisecond
	s := d.start(p.dial)
	r := waitState(t, s.Subscriber, "app", 1, StateFailed)
	if !strings.Contains(r.Error, "timed out") {
		t.Errorf("error %q, want it to say the action timed out", r.Error)
	}
}

// TestFailedRevisionNotRetriedOnOffer: a revision whose post-action failed
// is not installed again when the parent offers it again (a distributor
// offers a revision once while it arrives and once stored), only when the
// operator asks (`ted subscriber extract`), a window opens or the daemon
// starts.
func TestFailedRevisionNotRetriedOnOffer(t *testing.T) {
	p := newFakeParent(t)
	runs := filepath.Join(t.TempDir(), "runs")
	app := p.publishActions(1, nil, []string{`echo run >> "` + runs + `"; exit 3`})
	p.setGreet(app)
	d := newDaemon(t)
	s := d.start(p.dial)
	waitState(t, s.Subscriber, "app", 1, StateFailed)
	count := func() int {
		t.Helper()
		b, err := os.ReadFile(runs)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "run\n")
	}
	if n := count(); n != 1 {
		t.Fatalf("post-action ran %d times before the second offer, want 1", n)
	}

	// Offers are handled one at a time in order: once other is extracted,
	// the second offer of app@1 has been handled.
	p.offer(app)
	other, _ := p.publishNamed(daemonKey(), "other", "1.0.0", 1)
	p.offer(other)
	waitState(t, s.Subscriber, "other", 1, StateExtracted)
	if n := count(); n != 1 {
		t.Errorf("post-action ran %d times after app@1 was offered again, want 1 (a failed revision is not retried on an offer)", n)
	}
	if st, _ := stateOf(s.Subscriber, "app", 1); st.State != StateFailed {
		t.Errorf("app@1 is %s after the second offer, want it still failed", st.State)
	}

	if err := s.ExtractNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Errorf("post-action ran %d times after ted subscriber extract, want 2 (the operator retries a failed revision)", n)
	}
}
