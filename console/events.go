package console

import (
	"fmt"
	"io"
	"net/http"
	"time"
)

// serveEvents is /events: a stream of server-sent events. When the table
// changes, at most once per updateEvery, it sends
//
//	event: update
//	data: {"taken":"2026-12-03T12:00:00Z"}
//
// and the page fetches itself again; an idle stream gets a comment every
// keepaliveEvery. It ends when the client goes away or the daemon stops
// (the request's context). No goroutine of its own: one loop, two timers.
func (c *console) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	// Tell proxies not to buffer the stream.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	ctx := r.Context()
	table := c.src.Fleet()
	// Armed before the first write: a change from now on is sent.
	changed := table.Changed()
	send := func(s string) bool {
		if _, err := io.WriteString(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// A browser reconnects after retry ms when the stream ends.
	if !send("retry: 3000\n: ted console: updates follow\n\n") {
		return
	}
	keepalive := time.NewTicker(c.opts.keepaliveEvery)
	defer keepalive.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-keepalive.C:
			if !send(": keepalive\n\n") {
				return
			}
			continue
		case <-changed:
		}
		// At most one update per updateEvery: the changes made meanwhile
		// are in the page the client fetches after it.
		if wait := c.opts.updateEvery - time.Since(last); !last.IsZero() && wait > 0 {
			pause := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				pause.Stop()
				return
			case <-pause.C:
			}
		}
		// Re-armed before the client fetches: nothing is missed.
		changed = table.Changed()
		last = time.Now()
		if !send(fmt.Sprintf("event: update\ndata: {\"taken\":%q}\n\n", last.UTC().Format(time.RFC3339Nano))) {
			return
		}
		keepalive.Reset(c.opts.keepaliveEvery)
	}
}
