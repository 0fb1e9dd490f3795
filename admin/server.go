package admin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Sentinel errors. A view or an action wraps ErrNotFound or ErrInvalid
// (fmt.Errorf("package %q: %w", name, admin.ErrNotFound)) to choose the
// status code its error is sent with; Get and Post give them back, so
// errors.Is works on the CLI's side too.
var (
	// ErrNotFound: the thing asked for does not exist (HTTP 404).
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request's parameters are wrong (HTTP 400).
	ErrInvalid = errors.New("invalid request")
	// ErrAlreadyRunning: another daemon answers on the admin socket.
	ErrAlreadyRunning = errors.New("another daemon is already running")
)

// Action is an operator action (POST, admin socket only) or a read-only
// view (GET, both listeners). params holds the request's query and, for a
// POST, its form-encoded body. The result is sent as indented JSON, a nil
// result as {}; an error as {"error": err.Error()}. ctx ends when the client
// goes away or the server stops.
type Action func(ctx context.Context, params url.Values) (any, error)

// Endpoints is what a daemon serves. Every field is optional.
type Endpoints struct {
	// Status returns the value served on GET /api/status. Nil serves {}.
	Status func(ctx context.Context) (any, error)
	// Health returns nil while the daemon is healthy: GET /healthz answers
	// 200 "ok", or 503 with the error's text. Nil is always healthy.
	Health func(ctx context.Context) error
	// Metrics is gathered on GET /metrics, usually the daemon's own
	// *prometheus.Registry. Nil serves an empty exposition.
	Metrics prometheus.Gatherer
	// Views are read-only: GET /api/<name> on both listeners (the CLI's
	// "packages"). "status" is taken by Status.
	Views map[string]Action
	// Actions change things: POST /api/<name>, served on the admin socket
	// only ("extract", "rollback").
	Actions map[string]Action
	// Pages is the web console: served for GET (and HEAD) requests to
	// every path not otherwise handled (/, /nodes/..., /events,
	// /static/...), on both listeners; nil serves 404 for them. Paths
	// under /api/ are never its: an unknown one is a JSON 404. On a
	// status address with StatusTLS it is behind the same access control
	// as every other path.
	Pages http.Handler
}

// Config says where a Server listens and how it stops.
type Config struct {
	// StatusListen is the TCP address of the read-only endpoints (the
	// daemon's status_listen). Empty: no TCP listener. Without StatusTLS
	// it must be a loopback address (IsLoopback).
	StatusListen string
	// StatusTLS, if set, serves StatusListen over HTTPS to clients with an
	// operator certificate (access.go).
	StatusTLS *StatusTLS
	// SocketPath is the admin socket, normally SocketPath(data_dir).
	// Empty: no socket (tests and tools only; every daemon has one).
	SocketPath string
	// ShutdownTimeout bounds how long requests still running when Serve's
	// context ends may take to finish before their connections are cut.
	ShutdownTimeout time.Duration
	// ReadHeaderTimeout bounds how long a client may take to send a
	// request's headers, so idle or slow clients cannot pin connections.
	ReadHeaderTimeout time.Duration
}

// DefaultConfig returns a Config with no listeners and these defaults.
func DefaultConfig() Config {
	return Config{
		// Handlers see their context cancelled when Serve's ends, so they
		// return at once; this only bounds one that ignores it. A daemon
		// stopping on SIGTERM should not wait longer than that.
		ShutdownTimeout: 5 * time.Second,
		// Requests are a few hundred bytes from local tools or a scraper:
		// ten seconds is generous.
		ReadHeaderTimeout: 10 * time.Second,
	}
}

// Validate reports the first field that is wrong.
func (c Config) Validate() error {
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("admin: ShutdownTimeout %v: must be positive", c.ShutdownTimeout)
	}
	if c.ReadHeaderTimeout <= 0 {
		return fmt.Errorf("admin: ReadHeaderTimeout %v: must be positive", c.ReadHeaderTimeout)
	}
	if c.StatusListen != "" && c.StatusTLS == nil && !IsLoopback(c.StatusListen) {
		return fmt.Errorf("admin: status_listen %s: %w: plain HTTP is served on loopback only, elsewhere StatusTLS is required", c.StatusListen, ErrNotLoopback)
	}
	if c.StatusTLS != nil {
		if err := c.StatusTLS.check(); err != nil {
			return err
		}
	}
	if c.SocketPath != "" {
		return checkSocketPath(c.SocketPath)
	}
	return nil
}

// endpointName is what a view or an action may be called: one path segment
// that needs no escaping.
var endpointName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// statusView is the view name Endpoints.Status is served under.
const statusView = "status"

// maxActionBody bounds a POST body: parameters are a few names and flags.
const maxActionBody = 64 << 10

// Server serves a daemon's Endpoints on its status address and its admin
// socket. Listen binds, Serve answers until its context ends; Run does both.
type Server struct {
	cfg       Config
	endpoints Endpoints
	log       *slog.Logger

	mu    sync.Mutex
	state serverState
	tcp   net.Listener
	sock  *socket
}

type serverState int

const (
	stateNew serverState = iota
	stateListening
	stateServing
	stateClosed
)

// New checks cfg and the endpoint names and returns a Server that does not
// listen yet. A nil log discards.
func New(cfg Config, endpoints Endpoints, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkEndpoints(endpoints); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, endpoints: endpoints, log: log}, nil
}

func checkEndpoints(e Endpoints) error {
	check := func(kind string, m map[string]Action) error {
		for name, fn := range m {
			if !endpointName.MatchString(name) {
				return fmt.Errorf("admin: %s name %q: want lower-case letters, digits, - and _", kind, name)
			}
			if fn == nil {
				return fmt.Errorf("admin: %s %q: nil function", kind, name)
			}
		}
		return nil
	}
	if err := check("view", e.Views); err != nil {
		return err
	}
	if _, ok := e.Views[statusView]; ok {
		return fmt.Errorf("admin: view %q: taken by Endpoints.Status", statusView)
	}
	return check("action", e.Actions)
}

// Listen binds the admin socket, then the status address, so a daemon
// learns at once (and before it opens anything else) that another one runs
// on its data directory or that its port is taken. Errors name the socket
// path or the address.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateNew {
		return errors.New("admin: Listen called twice")
	}
	if s.cfg.SocketPath != "" {
		sock, err := listenSocket(s.cfg.SocketPath, s.log)
		if err != nil {
			return err
		}
		s.sock = sock
	}
	if s.cfg.StatusListen != "" {
		ln, err := net.Listen("tcp", s.cfg.StatusListen)
		if err != nil {
			if s.sock != nil {
				s.sock.close(s.log)
				s.sock = nil
			}
			return fmt.Errorf("status_listen %s: %w", s.cfg.StatusListen, err)
		}
		if s.cfg.StatusTLS == nil && !IsLoopback(ln.Addr().String()) {
			// "localhost" that a hosts file maps elsewhere: plain HTTP
			// only where the bound address is loopback.
			ln.Close()
			if s.sock != nil {
				s.sock.close(s.log)
				s.sock = nil
			}
			return fmt.Errorf("status_listen %s: bound to %s, %w", s.cfg.StatusListen, ln.Addr(), ErrNotLoopback)
		}
		scheme := "http"
		if s.cfg.StatusTLS != nil {
			ln = tls.NewListener(ln, s.cfg.StatusTLS.serverConfig())
			scheme = "https"
		}
		s.tcp = ln
		s.log.Info("status endpoints listening", "addr", ln.Addr().String(), "scheme", scheme)
	}
	s.state = stateListening
	return nil
}

// StatusAddr is the bound status address (useful with port 0), or nil
// before Listen or without one.
func (s *Server) StatusAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tcp == nil {
		return nil
	}
	return s.tcp.Addr()
}

// Run is Listen followed by Serve.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	return s.Serve(ctx)
}

// Serve answers on what Listen bound until ctx ends, then stops: requests
// in flight see their context cancelled and get ShutdownTimeout to return,
// the listeners close and the socket file is removed. It returns nil on
// such a stop, or the error that made a listener fail.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	switch s.state {
	case stateNew:
		s.mu.Unlock()
		return errors.New("admin: Serve called before Listen")
	case stateServing, stateClosed:
		s.mu.Unlock()
		return errors.New("admin: Serve called on a server already served or closed")
	}
	s.state = stateServing
	sock, tcp := s.sock, s.tcp
	s.mu.Unlock()

	type served struct {
		name string // for errors and logs: the address or socket path
		srv  *http.Server
		ln   net.Listener
	}
	var all []served
	if sock != nil {
		all = append(all, served{sock.path, s.httpServer(ctx, s.socketHandler()), sock.ln})
	}
	if tcp != nil {
		all = append(all, served{tcp.Addr().String(), s.httpServer(ctx, s.statusHandler()), tcp})
	}

	failed := make(chan error, len(all))
	var wg sync.WaitGroup
	for _, x := range all {
		wg.Go(func() {
			if err := x.srv.Serve(x.ln); !errors.Is(err, http.ErrServerClosed) {
				failed <- fmt.Errorf("admin: serve %s: %w", x.name, err)
			}
		})
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-failed:
	}

	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	for _, x := range all {
		if shutErr := x.srv.Shutdown(stopCtx); shutErr != nil {
			s.log.Warn("admin requests did not finish in time; cutting their connections",
				"addr", x.name, "timeout", s.cfg.ShutdownTimeout, "err", shutErr)
			_ = x.srv.Close()
		}
	}
	wg.Wait()

	s.mu.Lock()
	s.state = stateClosed
	s.mu.Unlock()
	if sock != nil {
		sock.close(s.log)
	}
	return err
}

// Close releases what Listen bound, removing the socket file, when Serve
// will not be called (the daemon failed to start after Listen). Once Serve
// has started it does nothing: Serve owns the listeners and releases them
// when its context ends. Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateServing {
		return nil
	}
	s.state = stateClosed
	var err error
	if s.tcp != nil {
		err = s.tcp.Close()
		s.tcp = nil
	}
	if s.sock != nil {
		s.sock.close(s.log)
		s.sock = nil
	}
	return err
}

// httpServer serves h with request contexts derived from ctx, so requests
// in flight are cancelled as soon as the daemon stops.
func (s *Server) httpServer(ctx context.Context, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// readOnlyMux holds the GET endpoints both listeners serve.
func (s *Server) readOnlyMux() *http.ServeMux {
	gatherer := s.endpoints.Metrics
	if gatherer == nil {
		gatherer = prometheus.NewRegistry()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.serveHealth)
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}))
	mux.HandleFunc("GET /api/{name}", s.serveView)
	mux.HandleFunc("GET /api/", s.serveUnknownAPI)
	// The catch-all: any GET or HEAD the patterns above, more specific,
	// do not take.
	pages := s.endpoints.Pages
	if pages == nil {
		pages = http.NotFoundHandler()
	}
	mux.Handle("GET /", pages)
	return mux
}

// statusHandler is the TCP listener's: read-only. It never reaches
// s.endpoints.Actions. With StatusTLS every request passes the operator
// check first (requireOperator).
func (s *Server) statusHandler() http.Handler {
	mux := s.readOnlyMux()
	mux.HandleFunc("POST /api/{name}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusForbidden, errorBody{
			Error: fmt.Sprintf("action %q: actions are served only on the admin socket", r.PathValue("name")),
		})
	})
	if t := s.cfg.StatusTLS; t != nil {
		return s.requireOperator(t, mux)
	}
	return mux
}

// socketHandler is the admin socket's: the read-only endpoints and the
// actions.
func (s *Server) socketHandler() http.Handler {
	mux := s.readOnlyMux()
	mux.HandleFunc("POST /api/{name}", s.serveAction)
	return mux
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.endpoints.Health != nil {
		if err := s.endpoints.Health(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintln(w, err.Error())
			return
		}
	}
	_, _ = fmt.Fprintln(w, "ok")
}

func (s *Server) serveView(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	view, ok := s.endpoints.Views[name]
	if name == statusView {
		view, ok = s.statusView, true
	}
	if !ok {
		names := append(slices.Sorted(maps.Keys(s.endpoints.Views)), statusView)
		writeError(w, fmt.Errorf("unknown view %q (views: %s): %w",
			name, strings.Join(names, ", "), ErrNotFound))
		return
	}
	result, err := view(r.Context(), r.URL.Query())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, result)
}

// serveUnknownAPI answers a GET under /api/ that is no view: the console's
// catch-all must not answer for the API.
func (s *Server) serveUnknownAPI(w http.ResponseWriter, r *http.Request) {
	names := append(slices.Sorted(maps.Keys(s.endpoints.Views)), statusView)
	writeError(w, fmt.Errorf("unknown API path %q (views: /api/%s): %w",
		r.URL.Path, strings.Join(names, ", /api/"), ErrNotFound))
}

func (s *Server) statusView(ctx context.Context, _ url.Values) (any, error) {
	if s.endpoints.Status == nil {
		return nil, nil
	}
	return s.endpoints.Status(ctx)
}

func (s *Server) serveAction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	action, ok := s.endpoints.Actions[name]
	if !ok {
		names := slices.Sorted(maps.Keys(s.endpoints.Actions))
		writeError(w, fmt.Errorf("unknown action %q (actions: %s): %w",
			name, strings.Join(names, ", "), ErrNotFound))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxActionBody)
	if err := r.ParseForm(); err != nil {
		writeError(w, fmt.Errorf("action %q: parameters: %v: %w", name, err, ErrInvalid))
		return
	}
	start := time.Now()
	result, err := action(r.Context(), r.Form)
	// An operator changed something: the daemon's log says what and how it
	// ended, whatever the client does with the answer.
	attrs := []any{"action", name, "params", r.Form.Encode(), "took", time.Since(start).Round(time.Millisecond)}
	if err != nil {
		s.log.Warn("admin action failed", append(attrs, "err", err)...)
		writeError(w, err)
		return
	}
	s.log.Info("admin action done", attrs...)
	writeJSON(w, http.StatusOK, result)
}

// errorBody is how every error travels: {"error": "..."}.
type errorBody struct {
	Error string `json:"error"`
}

// statusCode maps an error to the status code it is sent with; statusError
// (client.go) maps it back. These two are the only places that know.
func statusCode(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, statusCode(err), errorBody{Error: err.Error()})
}

// writeJSON encodes v before writing anything, so an encoding failure is
// still a clean 500.
func writeJSON(w http.ResponseWriter, code int, v any) {
	if v == nil {
		v = struct{}{}
	}
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code = http.StatusInternalServerError
		body, _ = json.MarshalIndent(errorBody{Error: "encode answer: " + err.Error()}, "", "  ")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
