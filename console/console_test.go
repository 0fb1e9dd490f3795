package console

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"ted/fleet"
	"ted/transport"
)

// fakeSource is a distributor's table in memory: dist-1 at the top, with
// dist-2 and web-03 below it, and web-01, web-02 and a subscriber with a
// hostile name below dist-2.
type fakeSource struct {
	table   *fleet.Table
	catalog []fleet.Catalog
	now     time.Time

	mu     sync.Mutex
	events []fleet.Event
}

const hostile = `<script>alert("x")</script>`

func newFake(t testing.TB) *fakeSource {
	t.Helper()
	s := &fakeSource{now: time.Now()}
	s.table = fleet.New(fleet.Config{Self: "dist-1", Events: func(evs []fleet.Event) {
		s.mu.Lock()
		s.events = append(s.events, evs...)
		s.mu.Unlock()
	}})
	s.catalog = []fleet.Catalog{{Name: "app", Revision: 2, Version: "1.2.0", Channels: []string{"web"}}}
	s.table.Child(transport.NodeState{Name: "dist-2", Role: "distributor", Agent: "0.9.0", Connected: true, Channels: []string{"web"},
		Revisions: []transport.RevisionState{rev("app", 2, "received"), rev("app", 1, "received")}})
	mid := fleet.New(fleet.Config{Self: "dist-2"})
	mid.Child(sub("web-01", rev("app", 2, "extracted"), rev("app", 1, "superseded")))
	blocked := rev("app", 2, "blocked")
	blocked.Reason = "needs db >= 3"
	mid.Child(sub("web-02", blocked, rev("app", 1, "extracted")))
	evil := sub(hostile, rev("app", 2, "failed"))
	evil.Revisions[0].Error = `disk "full" <b>`
	evil.Problem = `"><img src=x onerror=alert(1)>`
	mid.Child(evil)
	relayAll(t, mid, s.table, "dist-2")
	recv := rev("app", 2, "receiving")
	recv.Chunks, recv.HaveChunks = 10, 4
	s.table.Child(sub("web-03", recv))
	return s
}

func relayAll(t testing.TB, from *fleet.Table, to *fleet.Table, name string) {
	t.Helper()
	nodes, gone, full, _, count, digest := from.Changes(0)
	if err := to.Apply(name, &transport.Subtree{Full: full, Nodes: nodes, Gone: gone, Count: count, Digest: digest}); err != nil {
		t.Fatal(err)
	}
}

func sub(name string, revs ...transport.RevisionState) transport.NodeState {
	return transport.NodeState{Name: name, Role: "subscriber", Agent: "1.0.0", Channels: []string{"web"}, Connected: true, Revisions: revs}
}

func rev(name string, r uint64, state string) transport.RevisionState {
	return transport.RevisionState{Name: name, Revision: r, Version: fmt.Sprintf("1.%d.0", r), State: state}
}

func (s *fakeSource) FleetView(f fleet.Filter) fleet.View {
	self := fleet.Node{Name: "dist-1", Role: "distributor", Agent: "1.0.0", Connected: true, LastSeen: time.Now(), Distributions: []fleet.Dist{}}
	return s.table.View(self, s.catalog, f)
}

func (s *fakeSource) FleetEvents(since time.Time, node string, limit int) ([]fleet.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []fleet.Event
	for _, ev := range s.events {
		if (node == "" || ev.Node == node) && !ev.Time.Before(since) {
			out = append(out, ev)
		}
	}
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

func (s *fakeSource) Fleet() *fleet.Table { return s.table }

func testOptions() options {
	return options{updateEvery: 200 * time.Millisecond, keepaliveEvery: time.Hour, collapseAbove: collapseAbove}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// get serves one request and returns the status and the body.
func get(t *testing.T, h http.Handler, target string) (int, string, http.Header) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
	return w.Code, w.Body.String(), w.Header()
}

func mustGet(t *testing.T, h http.Handler, target string) string {
	t.Helper()
	code, body, hdr := get(t, h, target)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", target, code, body)
	}
	if ct := hdr.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("GET %s: Content-Type %q", target, ct)
	}
	return body
}

func requireContains(t *testing.T, what, body string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(body, p) {
			t.Errorf("%s lacks %q", what, p)
		}
	}
}

func requireLacks(t *testing.T, what, body string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if strings.Contains(body, p) {
			t.Errorf("%s holds %q", what, p)
		}
	}
}

// The overview shows each rollout with its bar and counts, blocked by
// reason and failed by error, and the summary; it reads without script.
func TestOverview(t *testing.T) {
	h := New(newFake(t), quiet())
	body := mustGet(t, h, "/")
	requireContains(t, "overview", body,
		`<main id="main"`,
		`data-node="dist-1" data-distributors="1" data-subscribers="4" data-stale="0"`,
		`<section class="rollout" data-rollout="app@2" data-version="1.2.0" data-extracted="1" data-subscribers="4">`,
		`role="progressbar"`, `aria-valuenow="1"`,
		`<rect class="s-extracted" data-state="extracted" x="0" y="0" width="250"`,
		`data-blocked="needs db &gt;= 3"`,
		`data-failed="disk &#34;full&#34; &lt;b&gt;"`,
		`1 / 4 extracted (25%)`,
		`Receiving: 4 of 10 chunks (40%)`,
		`href="/tree?dist=app%402&amp;state=failed"`,
		// app@1: web-01 superseded, web-02 extracted.
		`data-rollout="app@1" data-version="1.1.0" data-extracted="1" data-subscribers="2"`,
		"Actions are taken with the <code>ted</code> command",
		`<script src="/static/console.js?v=`,
	)
	requireLacks(t, "overview", body, hostile, "<img src=x")
	// The problem of the hostile node is listed, escaped.
	requireContains(t, "overview", body, `&#34;&gt;&lt;img src=x onerror=alert(1)&gt;`)
	if n := strings.Count(body, "<form"); n != 1 {
		t.Errorf("%d forms, want the one filter", n)
	}
	if !strings.Contains(body, `<form class="filters" method="get">`) {
		t.Error("the filter form is not a GET")
	}
}

// Filters narrow the overview; a bad one is a 400 that says why.
func TestOverviewFilters(t *testing.T) {
	h := New(newFake(t), quiet())
	body := mustGet(t, h, "/?dist=app%401")
	requireContains(t, "overview of app@1", body, `data-rollout="app@1"`, `(filtered)`, `value="app@1"`)
	requireLacks(t, "overview of app@1", body, `data-rollout="app@2"`)
	body = mustGet(t, h, "/?state=blocked")
	requireContains(t, "overview of blocked", body, `data-rollout="app@2"`, `<option value="blocked" selected>`)
	requireLacks(t, "overview of blocked", body, `data-rollout="app@1"`)
	body = mustGet(t, h, "/?node=web-0%5B12%5D")
	requireContains(t, "overview of web-0[12]", body, `data-subscribers="2"`)
	code, body, _ := get(t, h, "/?state=happy")
	if code != http.StatusBadRequest {
		t.Errorf("bad state: %d", code)
	}
	requireContains(t, "overview with a bad filter", body, `Filter not applied: --state &#34;happy&#34;`, `data-rollout="app@2"`)
}

// The tree: every node under its parent, with its revisions; the hostile
// name escaped and linked as one path segment.
func TestTree(t *testing.T) {
	h := New(newFake(t), quiet())
	body := mustGet(t, h, "/tree")
	names := regexp.MustCompile(`<tr data-node="([^"]*)"`).FindAllStringSubmatch(body, -1)
	var got []string
	for _, m := range names {
		got = append(got, m[1])
	}
	want := []string{"dist-1", "dist-2", "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;", "web-01", "web-02", "web-03"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("rows %q, want %q", got, want)
	}
	requireContains(t, "tree", body,
		`<tr data-node="web-02" data-role="subscriber" data-state="blocked" data-connected="true" data-stale="false">`,
		`<span class="branch">│  ├─ </span><a href="/nodes/web-01">web-01</a>`,
		`<span class="branch">└─ </span><a href="/nodes/web-03">web-03</a>`,
		`data-dist="app@2" data-state="receiving"`, `app@2 receiving 40%`,
		`title="needs db &gt;= 3"`,
		`href="/nodes/%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E"`,
	)
	requireLacks(t, "tree", body, hostile, "<img src=x", `<b>`)
	// Filtered: only the blocked node, under no parent shown.
	body = mustGet(t, h, "/tree?state=blocked")
	if n := strings.Count(body, "<tr data-node="); n != 1 || !strings.Contains(body, `<tr data-node="web-02"`) {
		t.Errorf("tree of blocked: %d rows\n%s", n, body)
	}
}

// Many subscribers under one distributor fold into a row of counts that
// links to the distributor's page, which lists them; ?all=1 unfolds.
func TestTreeCollapses(t *testing.T) {
	opts := testOptions()
	opts.collapseAbove = 2
	h := newConsole(newFake(t), quiet(), opts)
	body := mustGet(t, h, "/tree")
	requireContains(t, "tree", body, `<tr class="collapsed" data-collapsed="dist-2" data-count="3">`, `1 blocked`, `1 failed`, `1 extracted`,
		`href="/nodes/dist-2#children"`, `<tr data-node="web-03"`)
	requireLacks(t, "tree", body, `<tr data-node="web-01"`)
	body = mustGet(t, h, "/tree?all=1")
	requireContains(t, "tree?all=1", body, `<tr data-node="web-01"`)
	requireLacks(t, "tree?all=1", body, `data-collapsed`)
	body = mustGet(t, h, "/nodes/dist-2")
	requireContains(t, "dist-2's page", body, `<h2 id="children">Children (3)</h2>`, `<tr data-node="web-01"`, `<tr data-node="web-02"`)
}

// A node's page: fields, revisions with reason and error, events newest
// first; an unknown node is a 404 page.
func TestNodePage(t *testing.T) {
	src := newFake(t)
	h := New(src, quiet())
	body := mustGet(t, h, "/nodes/web-02")
	requireContains(t, "web-02's page", body,
		`<main id="main" data-taken=`, `data-node="web-02"`,
		`<a href="/nodes/dist-2">dist-2</a>`,
		`<tr data-dist="app@2" data-state="blocked">`, `needs db &gt;= 3`,
		`<tr data-dist="app@1" data-state="extracted">`,
		`<tr data-kind="blocked">`, `<tr data-kind="first_seen">`, `via dist-2`,
		`data-node-state="blocked"`,
	)
	if strings.Index(body, `data-kind="blocked"`) > strings.Index(body, `data-kind="first_seen"`) {
		t.Error("events are not newest first")
	}
	body = mustGet(t, h, "/nodes/%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E")
	requireContains(t, "the hostile node's page", body, `disk &#34;full&#34; &lt;b&gt;`, `data-problem="&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"`)
	requireLacks(t, "the hostile node's page", body, hostile, "<img src=x", "<b>")

	code, body, _ := get(t, h, "/nodes/nobody%3Cb%3E")
	if code != http.StatusNotFound {
		t.Errorf("unknown node: %d", code)
	}
	requireContains(t, "unknown node's page", body, `data-notfound="nobody&lt;b&gt;"`, `There is no node <strong>nobody&lt;b&gt;</strong>`)
}

// Static files are embedded; other paths and methods are refused.
func TestStaticAndErrors(t *testing.T) {
	c := newConsole(newFake(t), quiet(), testOptions())
	for _, name := range []string{"console.css", "console.js"} {
		code, body, hdr := get(t, c, "/static/"+name+"?v="+c.version)
		if code != http.StatusOK || len(body) < 100 {
			t.Errorf("%s: %d, %d bytes", name, code, len(body))
		}
		if !strings.Contains(hdr.Get("Cache-Control"), "immutable") {
			t.Errorf("%s: Cache-Control %q", name, hdr.Get("Cache-Control"))
		}
	}
	if _, _, hdr := get(t, c, "/static/console.css"); hdr.Get("Content-Type") != "text/css; charset=utf-8" || hdr.Get("Cache-Control") != "no-cache" {
		t.Errorf("css headers %v", hdr)
	}
	for _, target := range []string{"/static/", "/static/nope.js", "/static/layout.html", "/nope", "/nodes/", "/tree/x"} {
		if code, _, _ := get(t, c, target); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", target, code)
		}
	}
	w := httptest.NewRecorder()
	c.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/", strings.NewReader("x=1")))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", w.Code)
	}
	_, _, hdr := get(t, c, "/")
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	w = httptest.NewRecorder()
	c.ServeHTTP(w, httptest.NewRequest(http.MethodHead, "/tree", nil))
	if w.Code != http.StatusOK {
		t.Errorf("HEAD /tree: %d", w.Code)
	}
}

// sseReader reads a stream's events, one per blank line.
type sseReader struct {
	t     *testing.T
	lines chan string
}

func readSSE(t *testing.T, body io.Reader) *sseReader {
	r := &sseReader{t: t, lines: make(chan string, 100)}
	go func() {
		defer close(r.lines)
		sc := bufio.NewScanner(body)
		var block []string
		for sc.Scan() {
			if sc.Text() != "" {
				block = append(block, sc.Text())
				continue
			}
			r.lines <- strings.Join(block, "\n")
			block = nil
		}
	}()
	return r
}

// next returns the next block within timeout, or "" if the stream ended.
func (r *sseReader) next(timeout time.Duration) string {
	r.t.Helper()
	select {
	case b, ok := <-r.lines:
		if !ok {
			return ""
		}
		return b
	case <-time.After(timeout):
		r.t.Fatalf("no event within %s", timeout)
		return ""
	}
}

// /events says when the table changes, at most once per updateEvery,
// keeps an idle stream alive, and ends when the client goes away.
func TestEvents(t *testing.T) {
	src := newFake(t)
	opts := testOptions()
	opts.keepaliveEvery = 300 * time.Millisecond
	srv := httptest.NewServer(newConsole(src, quiet(), opts))
	defer srv.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	ev := readSSE(t, resp.Body)
	if b := ev.next(5 * time.Second); !strings.HasPrefix(b, "retry: ") {
		t.Fatalf("first block %q", b)
	}
	// Idle: a keepalive comment.
	if b := ev.next(5 * time.Second); b != ": keepalive" {
		t.Fatalf("idle stream sent %q", b)
	}
	// A change: an update.
	src.table.Child(sub("web-04", rev("app", 2, "extracted")))
	first := time.Now()
	b := ev.next(5 * time.Second)
	if !strings.HasPrefix(b, "event: update\ndata: {\"taken\":") {
		t.Fatalf("after a change: %q", b)
	}
	// Two more changes at once: one update, not before updateEvery.
	src.table.Child(sub("web-05", rev("app", 2, "extracted")))
	src.table.Child(sub("web-06", rev("app", 2, "extracted")))
	for {
		b = ev.next(5 * time.Second)
		if strings.HasPrefix(b, "event: update") {
			break
		}
	}
	if gap := time.Since(first); gap < opts.updateEvery {
		t.Errorf("second update %v after the first, want at least %v", gap, opts.updateEvery)
	}
	// The client goes away: the handler returns (srv.Close waits for it,
	// and goleak would find it).
	cancel()
	for b := "x"; b != ""; {
		b = ev.next(5 * time.Second)
	}
}

// notingWriter is a ResponseWriter that says what was written.
type notingWriter struct {
	header http.Header
	writes chan string
}

func (w *notingWriter) Header() http.Header { return w.header }
func (w *notingWriter) WriteHeader(int)     {}
func (w *notingWriter) Flush()              {}
func (w *notingWriter) Write(b []byte) (int, error) {
	w.writes <- string(b)
	return len(b), nil
}

// The handler returns when the request's context ends, also while it
// holds an update back.
func TestEventsEndWithRequest(t *testing.T) {
	src := newFake(t)
	opts := testOptions()
	opts.updateEvery = time.Hour
	c := newConsole(src, quiet(), opts)
	ctx, cancel := context.WithCancel(t.Context())
	w := &notingWriter{header: http.Header{}, writes: make(chan string, 10)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/events", nil).WithContext(ctx))
	}()
	wait := func(what string) {
		t.Helper()
		select {
		case b := <-w.writes:
			if !strings.Contains(b, what) {
				t.Fatalf("wrote %q, want %q", b, what)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("nothing written, want %q", what)
		}
	}
	wait("retry:")
	// The first change is sent, the second held back for an hour.
	src.table.Child(sub("web-04"))
	wait("event: update")
	src.table.Child(sub("web-05"))
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not end with its request")
	}
	select {
	case b := <-w.writes:
		t.Errorf("wrote %q after the update", b)
	default:
	}
}

// A node out of touch is marked so; one out of touch for longer than
// StaleAfter is stale, counted apart on the overview.
func TestStaleAndOutOfTouch(t *testing.T) {
	src := newFake(t)
	away := sub("web-07", rev("app", 2, "extracted"))
	away.Connected, away.LastSeen = false, time.Now().Add(-10*time.Second).UnixMilli()
	src.table.Child(away)
	gone := sub("web-08", rev("app", 2, "extracted"))
	gone.Connected, gone.LastSeen = false, time.Now().Add(-time.Hour).UnixMilli()
	src.table.Child(gone)
	h := New(src, quiet())
	body := mustGet(t, h, "/tree")
	requireContains(t, "tree", body,
		`<tr data-node="web-07" data-role="subscriber" data-state="extracted" data-connected="false" data-stale="false" class="away">`,
		`<span class="badge s-away">out of touch</span>`,
		`<tr data-node="web-08" data-role="subscriber" data-state="stale" data-connected="false" data-stale="true" class="stale">`,
		`1h ago <span class="badge s-stale">stale</span>`,
		`data-stale="1"`,
	)
	body = mustGet(t, h, "/")
	requireContains(t, "overview", body, `<span data-stale="1">1 stale</span>`, `data-rollout="app@2" data-version="1.2.0" data-extracted="2" data-subscribers="6"`)
	body = mustGet(t, h, "/nodes/web-08")
	requireContains(t, "web-08's page", body, `<tr><th>Stale since</th>`, `data-connected="false"`, `data-node-state="stale"`)
}
