// Package console is the web console of a distributor: read-only pages of
// what it knows of its subtree (the rollouts, the nodes as a tree, a page
// per node with its recent events), rendered on the server with
// html/template, and a small script that keeps them up to date from a
// stream of server-sent events. Everything it serves is inside the
// binary. The daemon mounts it as admin.Endpoints.Pages, on the admin
// socket and the status address.
package console

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"ted/fleet"
)

// Source is what the console reads: the running distributor.
type Source interface {
	FleetView(f fleet.Filter) fleet.View
	FleetEvents(since time.Time, node string, limit int) ([]fleet.Event, error)
	// Fleet is the table; its Changed channel is closed at every change.
	Fleet() *fleet.Table
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Defaults of the live updates.
const (
	// updateEvery bounds how often a client is told of changes.
	updateEvery = time.Second
	// keepaliveEvery is how often an idle stream gets a comment, so that
	// proxies and the browser keep it open.
	keepaliveEvery = 15 * time.Second
	// eventLimit is how many events a node's page shows.
	eventLimit = 100
	// collapseAbove: a node with more subscriber children than this shows
	// them on /tree as one row of counts (all of them on its own page).
	collapseAbove = 100
)

// options are the knobs tests turn.
type options struct {
	updateEvery, keepaliveEvery time.Duration
	collapseAbove               int
}

// console is the handler.
type console struct {
	src  Source
	log  *slog.Logger
	opts options
	tmpl *template.Template
	mux  *http.ServeMux
	// static is the embedded files, and version a digest of them that
	// the pages add to their URLs, so they can be cached for good.
	static  fs.FS
	version string
}

// New returns the console of src. It serves GET and HEAD requests at /,
// /tree, /nodes/{name}, /events and /static/...; every other path is a
// 404 page.
func New(src Source, log *slog.Logger) http.Handler {
	return newConsole(src, log, options{updateEvery: updateEvery, keepaliveEvery: keepaliveEvery, collapseAbove: collapseAbove})
}

func newConsole(src Source, log *slog.Logger, opts options) *console {
	if log == nil {
		log = slog.Default()
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // embedded: cannot fail
	}
	c := &console{src: src, log: log.With("component", "console"), opts: opts, static: static, version: digestFS(static)}
	c.tmpl = template.Must(template.New("").Funcs(c.funcs()).ParseFS(templateFS, "templates/*.html"))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", c.serveOverview)
	mux.HandleFunc("GET /tree", c.serveTree)
	mux.HandleFunc("GET /nodes/{name}", c.serveNode)
	mux.HandleFunc("GET /events", c.serveEvents)
	mux.HandleFunc("GET /static/", c.serveStatic)
	mux.HandleFunc("/", c.serveNotFound)
	c.mux = mux
	return c
}

func (c *console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Everything comes from here: no inline script or style, no frames.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	c.mux.ServeHTTP(w, r)
}

// render executes the page template name with data into a buffer, so an
// error is a 500, not half a page.
func (c *console) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	var buf bytes.Buffer
	if err := c.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		c.log.Error("console: page not rendered", "page", name, "path", r.URL.Path, "err", err)
		http.Error(w, "the page could not be rendered: see the daemon's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// page is what every page's layout uses.
type page struct {
	Title string
	// Nav is the current section: overview, tree or node.
	Nav     string
	Version string
	View    *fleet.View
	Summary summary
	Filter  fleet.Filter
	// Query is the filter as a query string ("" or "?dist=...").
	Query  string
	States []string
	Error  string
}

func (c *console) newPage(title, nav string, v *fleet.View, f fleet.Filter) page {
	p := page{Title: title, Nav: nav, Version: c.version, View: v, Filter: f, States: fleet.States}
	if v != nil {
		p.Summary = summarize(v)
	}
	if q := filterQuery(f); q != "" {
		p.Query = "?" + q
	}
	return p
}

// filterOf reads the filter from the query; an invalid one is an error
// shown on the page, and the page shows everything.
func filterOf(r *http.Request) (fleet.Filter, error) {
	q := r.URL.Query()
	f := fleet.Filter{Dist: strings.TrimSpace(q.Get("dist")), State: strings.TrimSpace(q.Get("state")), Node: strings.TrimSpace(q.Get("node"))}
	if err := f.Validate(); err != nil {
		return fleet.Filter{}, err
	}
	return f, nil
}

func (c *console) serveOverview(w http.ResponseWriter, r *http.Request) {
	f, ferr := filterOf(r)
	v := c.src.FleetView(f)
	p := overviewPage{page: c.newPage("Rollouts", "overview", &v, f)}
	status := http.StatusOK
	if ferr != nil {
		p.Error, status = ferr.Error(), http.StatusBadRequest
		p.Filter = fleet.Filter{}
	}
	p.Rollouts = rolloutsOf(&v, f)
	p.Problems, p.MoreProblems = problemsOf(&v, maxProblems)
	c.render(w, r, status, "overview.html", p)
}

func (c *console) serveTree(w http.ResponseWriter, r *http.Request) {
	f, ferr := filterOf(r)
	v := c.src.FleetView(f)
	p := treePage{page: c.newPage("Tree", "tree", &v, f), All: r.URL.Query().Get("all") == "1"}
	status := http.StatusOK
	if ferr != nil {
		p.Error, status = ferr.Error(), http.StatusBadRequest
		p.Filter = fleet.Filter{}
	}
	limit := c.opts.collapseAbove
	if p.All {
		limit = -1
	}
	p.Rows = treeRows(&v, limit)
	c.render(w, r, status, "tree.html", p)
}

func (c *console) serveNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	v := c.src.FleetView(fleet.Filter{})
	p := nodePage{page: c.newPage(name, "node", &v, fleet.Filter{}), Name: name}
	var n *fleet.Node
	for i := range v.Nodes {
		if v.Nodes[i].Name == name {
			n = &v.Nodes[i]
			break
		}
	}
	if n == nil {
		p.Title = "No node " + name
		c.render(w, r, http.StatusNotFound, "notfound.html", p)
		return
	}
	p.Node = n
	p.State = nodeState(n)
	p.Children = childRows(&v, name)
	evs, err := c.src.FleetEvents(time.Time{}, name, eventLimit)
	if err != nil {
		p.EventsError = err.Error()
	}
	// Newest first.
	for i := len(evs) - 1; i >= 0; i-- {
		p.Events = append(p.Events, evs[i])
	}
	c.render(w, r, http.StatusOK, "node.html", p)
}

func (c *console) serveNotFound(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "the console is read-only", http.StatusMethodNotAllowed)
		return
	}
	p := nodePage{page: c.newPage("Not found", "", nil, fleet.Filter{})}
	p.Error = fmt.Sprintf("There is no page at %s.", r.URL.Path)
	c.render(w, r, http.StatusNotFound, "notfound.html", p)
}

func (c *console) serveStatic(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("v") == c.version {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	name := strings.TrimPrefix(r.URL.Path, "/static/")
	if name == "" || strings.HasSuffix(name, "/") {
		c.serveNotFound(w, r)
		return
	}
	if _, err := fs.Stat(c.static, name); err != nil {
		c.serveNotFound(w, r)
		return
	}
	http.ServeFileFS(w, r, c.static, name)
}
