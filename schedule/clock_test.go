package schedule

import (
	"testing"
	"time"
)

func TestFakeClockTimers(t *testing.T) {
	start := utc(2026, 1, 1, 0, 0)
	c := NewFakeClock(start)
	a := c.After(time.Minute)
	b := c.NewTimer(time.Hour)
	stopped := c.NewTimer(2 * time.Minute)
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop should report pending once")
	}
	if c.Pending() != 2 {
		t.Fatalf("pending = %d", c.Pending())
	}
	c.Advance(59 * time.Second)
	select {
	case <-a:
		t.Fatal("fired early")
	default:
	}
	c.Advance(time.Second)
	if got := <-a; !got.Equal(start.Add(time.Minute)) {
		t.Errorf("fired with %v", got)
	}
	c.Set(start.Add(2 * time.Hour))
	if got := <-b.C(); !got.Equal(start.Add(time.Hour)) {
		t.Errorf("fired with %v", got)
	}
	select {
	case <-stopped.C():
		t.Fatal("stopped timer fired")
	default:
	}
	if !c.Now().Equal(start.Add(2 * time.Hour)) {
		t.Errorf("now = %v", c.Now())
	}
	if got := <-c.After(0); !got.Equal(c.Now()) {
		t.Errorf("After(0) = %v", got)
	}
}

func TestFakeClockBlockUntil(t *testing.T) {
	c := NewFakeClock(utc(2026, 1, 1, 0, 0))
	done := make(chan time.Time)
	go func() { done <- <-c.After(time.Hour) }()
	c.BlockUntil(1)
	c.Advance(time.Hour)
	if got := <-done; !got.Equal(utc(2026, 1, 1, 1, 0)) {
		t.Errorf("woke at %v", got)
	}
}

func TestSystemClock(t *testing.T) {
	c := SystemClock()
	if c.Now().IsZero() {
		t.Fatal("zero now")
	}
	<-c.After(0)
	tm := c.NewTimer(time.Hour)
	if !tm.Stop() {
		t.Error("Stop of a pending timer = false")
	}
}

// Waiting for a schedule's next window with the fake clock: no sleeping.
func TestWaitForWindowWithFakeClock(t *testing.T) {
	s := mustSchedule(t, "    windows: [{cron: '0 22 * * *', duration: 1h}]\n")
	c := NewFakeClock(utc(2026, 1, 1, 12, 0))
	w, ok := s.Next(c.Now())
	if !ok {
		t.Fatal("no next window")
	}
	fired := c.After(w.Start.Sub(c.Now()))
	c.Advance(10 * time.Hour)
	<-fired
	if !s.OpenAt(c.Now()) {
		t.Error("closed at the window start")
	}
	c.Advance(time.Hour)
	if s.OpenAt(c.Now()) {
		t.Error("open at the window end")
	}
}
