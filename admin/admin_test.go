package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ted/admin"
)

// running is a server under test: Listen has returned, Serve runs until
// stop.
type running struct {
	srv    *admin.Server
	socket string
	base   string // http://host:port of the status listener
	stop   func() error
}

// start listens synchronously (so nothing has to guess when the server is
// up) and serves until the test ends or stop is called.
func start(t *testing.T, socketPath string, endpoints admin.Endpoints) *running {
	t.Helper()
	cfg := admin.DefaultConfig()
	cfg.StatusListen = "127.0.0.1:0"
	cfg.SocketPath = socketPath
	r := serve(t, cfg, endpoints)
	r.base = "http://" + r.srv.StatusAddr().String()
	return r
}

// serve makes a server of cfg, listens synchronously and serves until
// the test ends or stop is called.
func serve(t *testing.T, cfg admin.Config, endpoints admin.Endpoints) *running {
	t.Helper()
	srv, err := admin.New(cfg, endpoints, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	var stopped bool
	var stopErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			stopErr = <-done
		}
		return stopErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &running{srv: srv, socket: cfg.SocketPath, stop: stop}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func socketIn(t *testing.T) string {
	return admin.SocketPath(t.TempDir())
}

// fetch does one request on the status listener and returns status code,
// content type and body.
func fetch(t *testing.T, method, rawURL string) (int, string, string) {
	t.Helper()
	transport := &http.Transport{DisableKeepAlives: true}
	defer transport.CloseIdleConnections()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

func TestHealthz(t *testing.T) {
	var unhealthy atomic.Pointer[error]
	r := start(t, socketIn(t), admin.Endpoints{
		Health: func(context.Context) error {
			if p := unhealthy.Load(); p != nil {
				return *p
			}
			return nil
		},
	})
	ctx := t.Context()

	code, _, body := fetch(t, "GET", r.base+"/healthz")
	if code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("healthy: %d %q, want 200 ok", code, body)
	}
	if err := admin.Get(ctx, r.socket, "/healthz", nil); err != nil {
		t.Fatalf("healthy over the socket: %v", err)
	}

	sick := errors.New("store: disk full")
	unhealthy.Store(&sick)
	code, _, body = fetch(t, "GET", r.base+"/healthz")
	if code != http.StatusServiceUnavailable || strings.TrimSpace(body) != "store: disk full" {
		t.Fatalf("unhealthy: %d %q, want 503 with the error", code, body)
	}
	if err := admin.Get(ctx, r.socket, "/healthz", nil); err == nil || err.Error() != "store: disk full" {
		t.Fatalf("unhealthy over the socket: %v, want the health error's text", err)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	received := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ted_chunks_received_total", Help: "Chunks received.",
	})
	reg.MustRegister(received)
	received.Add(3)
	r := start(t, socketIn(t), admin.Endpoints{Metrics: reg})

	code, _, body := fetch(t, "GET", r.base+"/metrics")
	if code != 200 || !strings.Contains(body, "ted_chunks_received_total 3") {
		t.Fatalf("/metrics: %d\n%s\nwant the counter at 3", code, body)
	}
}

func TestMetricsWithoutRegistry(t *testing.T) {
	r := start(t, socketIn(t), admin.Endpoints{})
	if code, _, body := fetch(t, "GET", r.base+"/metrics"); code != 200 {
		t.Fatalf("/metrics without a registry: %d %q, want 200", code, body)
	}
}

type nodeStatus struct {
	Node          string   `json:"node"`
	Role          string   `json:"role"`
	Distributions []string `json:"distributions"`
}

func TestStatusJSON(t *testing.T) {
	want := nodeStatus{Node: "sub-1", Role: "single", Distributions: []string{"webstack", "base"}}
	r := start(t, socketIn(t), admin.Endpoints{
		Status: func(context.Context) (any, error) { return want, nil },
	})

	code, contentType, body := fetch(t, "GET", r.base+"/api/status")
	if code != 200 || contentType != "application/json" {
		t.Fatalf("/api/status: %d %q, want 200 application/json", code, contentType)
	}
	if !strings.Contains(body, "\n  \"node\": \"sub-1\"") {
		t.Errorf("/api/status is not indented:\n%s", body)
	}
	var got nodeStatus
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("over TCP: %+v, want %+v", got, want)
	}

	got = nodeStatus{}
	if err := admin.Get(t.Context(), r.socket, "/api/status", &got); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("over the socket: %+v, want %+v", got, want)
	}
}

func TestStatusDefaultsAndErrors(t *testing.T) {
	r := start(t, socketIn(t), admin.Endpoints{})
	if code, _, body := fetch(t, "GET", r.base+"/api/status"); code != 200 || strings.TrimSpace(body) != "{}" {
		t.Errorf("no Status: %d %q, want 200 {}", code, body)
	}

	r = start(t, socketIn(t), admin.Endpoints{
		Status: func(context.Context) (any, error) { return nil, errors.New("store closed") },
	})
	code, _, body := fetch(t, "GET", r.base+"/api/status")
	if code != 500 || !strings.Contains(body, `"error": "store closed"`) {
		t.Errorf("failing Status: %d %q, want 500 with the error", code, body)
	}
}

func TestViews(t *testing.T) {
	r := start(t, socketIn(t), admin.Endpoints{
		Views: map[string]admin.Action{
			"packages": func(_ context.Context, params url.Values) (any, error) {
				return map[string]string{"name": params.Get("name")}, nil
			},
		},
		Actions: map[string]admin.Action{"extract": func(context.Context, url.Values) (any, error) { return nil, nil }},
	})

	code, _, body := fetch(t, "GET", r.base+"/api/packages?name=webstack")
	if code != 200 || !strings.Contains(body, `"name": "webstack"`) {
		t.Errorf("view over TCP: %d %q", code, body)
	}
	var got map[string]string
	if err := admin.Get(t.Context(), r.socket, "/api/packages?name=base", &got); err != nil || got["name"] != "base" {
		t.Errorf("view over the socket: %v %v", got, err)
	}

	err := admin.Get(t.Context(), r.socket, "/api/nope", nil)
	if !errors.Is(err, admin.ErrNotFound) || !strings.Contains(err.Error(), `unknown view "nope"`) {
		t.Errorf("unknown view: %v, want ErrNotFound naming it", err)
	}
}

func TestActions(t *testing.T) {
	type rollback struct {
		Name       string `json:"name"`
		RolledBack string `json:"rolled_back"`
	}
	r := start(t, socketIn(t), admin.Endpoints{
		Actions: map[string]admin.Action{
			"rollback": func(_ context.Context, params url.Values) (any, error) {
				name := params.Get("name")
				switch name {
				case "webstack":
					return rollback{Name: name, RolledBack: "r7"}, nil
				case "":
					return nil, fmt.Errorf("rollback: --name is required: %w", admin.ErrInvalid)
				default:
					return nil, fmt.Errorf("package %q is not installed: %w", name, admin.ErrNotFound)
				}
			},
			"extract": func(context.Context, url.Values) (any, error) {
				return nil, errors.New("extract: webstack r7 blocked: needs base >= 2")
			},
		},
	})
	ctx := t.Context()

	var got rollback
	if err := admin.Post(ctx, r.socket, "rollback", url.Values{"name": {"webstack"}}, &got); err != nil {
		t.Fatal(err)
	}
	if got != (rollback{Name: "webstack", RolledBack: "r7"}) {
		t.Errorf("rollback answered %+v", got)
	}

	tests := []struct {
		action   string
		params   url.Values
		text     string
		sentinel error
	}{
		{"extract", nil, "extract: webstack r7 blocked: needs base >= 2", nil},
		{"rollback", nil, "rollback: --name is required: invalid request", admin.ErrInvalid},
		{"rollback", url.Values{"name": {"x"}}, `package "x" is not installed: not found`, admin.ErrNotFound},
		{"nope", nil, `unknown action "nope" (actions: extract, rollback): not found`, admin.ErrNotFound},
	}
	for _, tt := range tests {
		err := admin.Post(ctx, r.socket, tt.action, tt.params, nil)
		if err == nil || err.Error() != tt.text {
			t.Errorf("%s %v: error %v, want %q", tt.action, tt.params, err, tt.text)
			continue
		}
		if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
			t.Errorf("%s %v: %v is not %v", tt.action, tt.params, err, tt.sentinel)
		}
		if errors.Is(err, admin.ErrNoDaemon) {
			t.Errorf("%s: %v claims no daemon runs", tt.action, err)
		}
	}
}

func TestActionsRefusedOnTCP(t *testing.T) {
	var calls atomic.Int32
	r := start(t, socketIn(t), admin.Endpoints{
		Actions: map[string]admin.Action{"extract": func(context.Context, url.Values) (any, error) {
			calls.Add(1)
			return nil, nil
		}},
	})
	code, _, body := fetch(t, "POST", r.base+"/api/extract")
	if code != http.StatusForbidden || !strings.Contains(body, "only on the admin socket") {
		t.Errorf("POST over TCP: %d %q, want 403", code, body)
	}
	if code, _, _ := fetch(t, "GET", r.base+"/api/extract"); code != http.StatusNotFound {
		t.Errorf("GET of an action over TCP: %d, want 404", code)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("the action ran %d times from TCP", n)
	}
	if err := admin.Post(t.Context(), r.socket, "extract", nil, nil); err != nil || calls.Load() != 1 {
		t.Errorf("over the socket: %v, %d calls", err, calls.Load())
	}
}

func TestSocketFile(t *testing.T) {
	dir := t.TempDir()
	r := start(t, admin.SocketPath(dir), admin.Endpoints{})
	fi, err := os.Lstat(r.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	// The temporary directory it was bound in is gone.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != admin.SocketName {
		t.Errorf("data dir holds %v, want only %s", entries, admin.SocketName)
	}
}

// staleSocket leaves a socket file at path that nothing listens on, as a
// killed daemon does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatal(err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := socketIn(t)
	staleSocket(t, path)
	r := start(t, path, admin.Endpoints{})
	if err := admin.Get(t.Context(), r.socket, "/healthz", nil); err != nil {
		t.Fatalf("after replacing a stale socket: %v", err)
	}
}

func TestSecondServerRefused(t *testing.T) {
	r := start(t, socketIn(t), admin.Endpoints{})
	cfg := admin.DefaultConfig()
	cfg.SocketPath = r.socket
	second, err := admin.New(cfg, admin.Endpoints{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	err = second.Listen()
	if !errors.Is(err, admin.ErrAlreadyRunning) || !strings.Contains(err.Error(), r.socket) {
		t.Fatalf("second server: %v, want ErrAlreadyRunning naming %s", err, r.socket)
	}
	if err := admin.Get(t.Context(), r.socket, "/healthz", nil); err != nil {
		t.Fatalf("the first server after the second failed: %v", err)
	}
}

func TestNotASocketKept(t *testing.T) {
	path := socketIn(t)
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := admin.DefaultConfig()
	cfg.SocketPath = path
	srv, err := admin.New(cfg, admin.Endpoints{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Listen()
	if err == nil || !strings.Contains(err.Error(), "not a socket") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Listen over a regular file: %v, want an error naming it", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "precious" {
		t.Errorf("the file was changed to %q", data)
	}
}

func TestStatusListenError(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	path := socketIn(t)
	cfg := admin.DefaultConfig()
	cfg.StatusListen = taken.Addr().String()
	cfg.SocketPath = path
	srv, err := admin.New(cfg, admin.Endpoints{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Listen()
	if err == nil || !strings.Contains(err.Error(), "status_listen "+taken.Addr().String()) {
		t.Fatalf("Listen on a taken port: %v, want an error naming the address", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the socket was left behind: %v", err)
	}
}

func TestClientWithoutDaemon(t *testing.T) {
	ctx := t.Context()
	path := socketIn(t)
	err := admin.Get(ctx, path, "/api/status", nil)
	if want := "no daemon is running on " + path + ": no such file"; err == nil || err.Error() != want {
		t.Errorf("no socket: %v, want %q", err, want)
	}
	if !errors.Is(err, admin.ErrNoDaemon) {
		t.Errorf("no socket: %v is not ErrNoDaemon", err)
	}

	staleSocket(t, path)
	err = admin.Post(ctx, path, "extract", nil, nil)
	if want := "no daemon is running on " + path + ": connection refused"; err == nil || err.Error() != want {
		t.Errorf("stale socket: %v, want %q", err, want)
	}
}

func TestShutdown(t *testing.T) {
	entered := make(chan struct{})
	r := start(t, socketIn(t), admin.Endpoints{
		Actions: map[string]admin.Action{"extract": func(ctx context.Context, _ url.Values) (any, error) {
			close(entered)
			<-ctx.Done() // a long action: stopping the daemon cancels it
			return nil, ctx.Err()
		}},
	})
	addr := r.srv.StatusAddr().String()

	posted := make(chan error, 1)
	go func() { posted <- admin.Post(context.Background(), r.socket, "extract", nil, nil) }()
	<-entered
	if err := r.stop(); err != nil {
		t.Fatalf("Serve after cancel: %v, want nil", err)
	}
	if err := <-posted; err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("the action in flight: %v, want it cancelled", err)
	}

	if _, err := os.Lstat(r.socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after shutdown: %v", err)
	}
	if err := admin.Get(t.Context(), r.socket, "/healthz", nil); !errors.Is(err, admin.ErrNoDaemon) {
		t.Errorf("client after shutdown: %v, want ErrNoDaemon", err)
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Errorf("status address %s still accepts", addr)
	}
}

func TestCloseWithoutServe(t *testing.T) {
	path := socketIn(t)
	cfg := admin.DefaultConfig()
	cfg.StatusListen = "127.0.0.1:0"
	cfg.SocketPath = path
	srv, err := admin.New(cfg, admin.Endpoints{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
	if err := srv.Serve(t.Context()); err == nil {
		t.Error("Serve after Close succeeded")
	}
}

func TestServeWithoutListen(t *testing.T) {
	srv, err := admin.New(admin.DefaultConfig(), admin.Endpoints{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(t.Context()); err == nil {
		t.Error("Serve before Listen succeeded")
	}
}

func TestRun(t *testing.T) {
	path := socketIn(t)
	cfg := admin.DefaultConfig()
	cfg.SocketPath = path
	srv, err := admin.New(cfg, admin.Endpoints{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()

	// Run listens in its own goroutine: poll until the socket answers.
	deadline := time.Now().Add(10 * time.Second)
	for admin.Get(t.Context(), path, "/healthz", nil) != nil {
		if time.Now().After(deadline) {
			t.Fatal("Run never answered on its socket")
		}
		runtime.Gosched()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Run: %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	nop := func(context.Context, url.Values) (any, error) { return nil, nil }
	long := filepath.Join("/", strings.Repeat("d", 120), admin.SocketName)
	tests := []struct {
		name      string
		cfg       func(*admin.Config)
		endpoints admin.Endpoints
		want      string
	}{
		{"view named status", nil, admin.Endpoints{Views: map[string]admin.Action{"status": nop}}, `view "status"`},
		{"action with a slash", nil, admin.Endpoints{Actions: map[string]admin.Action{"a/b": nop}}, `action name "a/b"`},
		{"nil action", nil, admin.Endpoints{Actions: map[string]admin.Action{"extract": nil}}, `action "extract": nil`},
		{"no shutdown timeout", func(c *admin.Config) { c.ShutdownTimeout = 0 }, admin.Endpoints{}, "ShutdownTimeout"},
		{"socket path too long", func(c *admin.Config) { c.SocketPath = long }, admin.Endpoints{}, long + ": path too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := admin.DefaultConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			_, err := admin.New(cfg, tt.endpoints, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestListenMissingDataDir(t *testing.T) {
	path := admin.SocketPath(filepath.Join(t.TempDir(), "missing"))
	cfg := admin.DefaultConfig()
	cfg.SocketPath = path
	srv, err := admin.New(cfg, admin.Endpoints{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err == nil || !strings.Contains(err.Error(), "admin socket "+path) {
		t.Fatalf("Listen in a missing directory: %v, want an error naming the socket", err)
	}
}

func TestServeCancelledBeforehand(t *testing.T) {
	path := socketIn(t)
	cfg := admin.DefaultConfig()
	cfg.StatusListen = "127.0.0.1:0"
	cfg.SocketPath = path
	srv, err := admin.New(cfg, admin.Endpoints{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := srv.Serve(ctx); err != nil {
		t.Fatalf("Serve with a cancelled context: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Serve: %v", err)
	}
}
