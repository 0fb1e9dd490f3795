package distributor_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"ted/schedule"
	"ted/transport"
)

// TestSendWindowGatesOffersAndChunks: outside web's send window a child is
// told when it opens and is offered nothing; at the opening it is offered
// the revision and gets its chunks; once the window has closed, chunks are
// refused with the next opening as RetryAt.
func TestSendWindowGatesOffersAndChunks(t *testing.T) {
	file := filepath.Join(t.TempDir(), "schedules.yaml")
	if err := os.WriteFile(file, []byte("schedules:\n  nights:\n    windows:\n      - cron: \"0 22 * * *\"\n        duration: 2h\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := schedule.NewSource(file, []string{"nights"})
	if err != nil {
		t.Fatal(err)
	}
	clock := schedule.NewFakeClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	cfg := testConfig()
	web := cfg.Channels["web"]
	web.Send = "nights"
	cfg.Channels["web"] = web
	cfg.Schedules, cfg.Clock = src, clock
	n := startDistributor(t, cfg, nil)

	pubSrc := memStore(t)
	s1, m1 := build(t, pubSrc, publisherKey(), appFiles(1), 1, "web")
	n.publish(pubID, pubSrc, s1) // publishing is not gated by send windows

	child := n.mustChild(subID, "web")
	msg := receive(t, child.control)
	notice, ok := msg.(*transport.Error)
	opens := time.Date(2026, 11, 23, 22, 0, 0, 0, time.UTC)
	if !ok || notice.RetryAt != opens.Unix() {
		t.Fatalf("outside the window the child got %#v, want a notice with RetryAt %s", msg, opens)
	}

	clock.BlockUntil(1) // the child's offer loop waits for the opening
	clock.Set(opens.Add(time.Second))
	if got := child.nextOffer(); !slices.Equal(got.Encode(), s1.Encode()) {
		t.Fatal("at the opening the child was not offered app@1")
	}
	if err := child.fetch(m1, memStore(t)); err != nil {
		t.Fatalf("fetch inside the window: %v", err)
	}

	clock.Set(time.Date(2026, 11, 24, 0, 30, 0, 0, time.UTC))
	err = child.fetch(m1, memStore(t))
	at, ok := transport.RetryAt(err)
	if !errors.Is(err, transport.ErrUnavailable) || !ok || !at.Equal(opens.Add(24*time.Hour)) {
		t.Fatalf("fetch after the window closed: %v (retry at %v), want ErrUnavailable until %s", err, at, opens.Add(24*time.Hour))
	}
}
