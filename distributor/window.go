package distributor

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"ted/schedule"
	"ted/transport"
)

// sendState says on which of channels (if any) a child may receive now,
// and until when; if on none, when it may (zero: never).
func (d *Distributor) sendState(channels []string, child string) (open string, at time.Time) {
	var next time.Time
	now := d.cfg.Clock.Now()
	for _, name := range channels {
		ch, ok := d.members().channels[name]
		if !ok {
			continue
		}
		sch := d.sendSchedule(ch)
		if w, ok := sch.WindowAt(now); ok {
			// jitter spreads the children's starts across the window's
			// beginning, the same offset for a child all window long.
			start := w.Start.Add(sch.JitterFor(child, w))
			if !now.Before(start) {
				return name, w.End
			}
			next = earliest(next, start)
			continue
		}
		if w, ok := sch.Next(now); ok {
			next = earliest(next, w.Start.Add(sch.JitterFor(child, w)))
		}
	}
	return "", next
}

func (d *Distributor) sendSchedule(ch Channel) *schedule.Schedule {
	if ch.Send == "" {
		return d.cfg.Schedules.Lookup(schedule.Always)
	}
	return d.cfg.Schedules.Lookup(ch.Send)
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// closed is the error a child gets outside its send window.
func closedUntil(channels []string, next time.Time) error {
	return &transport.ClosedUntil{At: next, Reason: fmt.Sprintf("send window of %v closed", channels)}
}

// limiters caps each channel's total send rate (its schedule's max_rate),
// shared by all children; a reloaded schedule gets a new limiter.
type limiters struct {
	mu  sync.Mutex
	per map[string]channelLimiter
}

type channelLimiter struct {
	sch *schedule.Schedule
	lim *rate.Limiter
}

// wait blocks until n more bytes may be sent on the first of channels that
// is open, in pieces no larger than the limiter's burst.
func (d *Distributor) waitRate(ctx context.Context, channel string, n int) error {
	ch, ok := d.members().channels[channel]
	if !ok {
		return nil
	}
	sch := d.sendSchedule(ch)
	if sch.MaxRate <= 0 {
		return nil
	}
	d.limits.mu.Lock()
	cl, ok := d.limits.per[channel]
	if !ok || cl.sch != sch {
		cl = channelLimiter{sch: sch, lim: sch.Limiter()}
		d.limits.per[channel] = cl
	}
	d.limits.mu.Unlock()
	for n > 0 {
		step := min(n, cl.lim.Burst())
		if !cl.lim.AllowN(time.Now(), step) {
			// A wait: no send slot is held through it.
			transport.ReleaseSendSlot(ctx)
		} else {
			n -= step
			continue
		}
		if err := cl.lim.WaitN(ctx, step); err != nil {
			return err
		}
		n -= step
	}
	return nil
}

// sendStateTTL bounds how long a child's open window is taken as known
// without asking the schedule again, so a reloaded schedule file takes
// effect within it even in the middle of a long window.
const sendStateTTL = time.Second

// openFor is sendState for the chunks of one revision offered to a child,
// remembered until the window ends (at most sendStateTTL): it is asked for
// every chunk served, and a schedule's window query walks its cron
// openings.
func (d *Distributor) openFor(c *child, key revKey, channels []string) (open string, at time.Time) {
	now := d.cfg.Clock.Now()
	c.mu.Lock()
	cached, ok := c.open[key]
	c.mu.Unlock()
	if ok && now.Before(cached.until) {
		return cached.channel, cached.until
	}
	open, at = d.sendState(channels, c.name)
	if open != "" {
		until := at
		if limit := now.Add(sendStateTTL); limit.Before(until) {
			until = limit
		}
		c.mu.Lock()
		c.open[key] = openWindow{channel: open, until: until}
		c.mu.Unlock()
	}
	return open, at
}

// openWindow is a child's send window known open for a revision.
type openWindow struct {
	channel string
	until   time.Time
}
