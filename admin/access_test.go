package admin_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"ted/admin"
	"ted/pki"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7401":          true,
		"127.3.2.1:0":             true,
		"[::1]:7401":              true,
		"localhost:7401":          true,
		"LocalHost:7401":          true,
		"[::ffff:127.0.0.1]:7401": true,
		"0.0.0.0:7401":            false,
		"[::]:7401":               false,
		":7401":                   false,
		"10.0.0.5:7401":           false,
		"dist-1.example.net:7401": false,
		"localhost.evil.net:7401": false,
		"127.0.0.1":               false, // not HOST:PORT
	} {
		if got := admin.IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// Plain HTTP on an address other than loopback is refused by New.
func TestPlainStatusRefusedOffLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0", "10.1.2.3:7401"} {
		cfg := admin.DefaultConfig()
		cfg.StatusListen = addr
		_, err := admin.New(cfg, admin.Endpoints{}, nil)
		if !errors.Is(err, admin.ErrNotLoopback) || !strings.Contains(err.Error(), "status_listen "+addr) {
			t.Errorf("%s without StatusTLS: %v, want ErrNotLoopback naming the address", addr, err)
		}
	}
	cfg := admin.DefaultConfig()
	cfg.StatusListen = "0.0.0.0:0"
	cfg.StatusTLS = &admin.StatusTLS{CAs: x509.NewCertPool()}
	if _, err := admin.New(cfg, admin.Endpoints{}, nil); err == nil || !strings.Contains(err.Error(), "Certificate") {
		t.Errorf("StatusTLS without a certificate: %v", err)
	}
}

// testCA is a CA directory with a node certificate (the server's) and
// clients of several roles.
type testCA struct {
	dir  string
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	dir := t.TempDir()
	if _, err := pki.InitCA(dir, false); err != nil {
		t.Fatal(err)
	}
	pool, err := pki.LoadCertPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{dir: dir, pool: pool}
}

func (c *testCA) issue(t *testing.T, name string, role pki.Role) tls.Certificate {
	t.Helper()
	files, err := pki.Issue(c.dir, name, role, []string{name, "127.0.0.1", "::1"}, false)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// startTLS serves endpoints over HTTPS on 0.0.0.0 (not loopback), with the
// server certificate that *server holds at each handshake.
func startTLS(t *testing.T, st *admin.StatusTLS, endpoints admin.Endpoints) string {
	t.Helper()
	cfg := admin.DefaultConfig()
	cfg.StatusListen = "0.0.0.0:0"
	cfg.StatusTLS = st
	srv := serve(t, cfg, endpoints).srv
	_, port, _ := strings.Cut(srv.StatusAddr().String(), "]:")
	if port == "" {
		_, port, _ = strings.Cut(srv.StatusAddr().String(), ":")
	}
	return "https://127.0.0.1:" + port
}

// tlsGet does one GET with client (nil: no client certificate) and
// returns the status code and body, or the error.
func tlsGet(t *testing.T, url string, pool *x509.CertPool, client *tls.Certificate) (int, string, error) {
	t.Helper()
	conf := &tls.Config{RootCAs: pool}
	if client != nil {
		conf.Certificates = []tls.Certificate{*client}
	}
	tr := &http.Transport{TLSClientConfig: conf, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	return resp.StatusCode, string(body), nil
}

func statusTLSFixture(t *testing.T) (*testCA, *admin.StatusTLS, *atomic.Pointer[tls.Certificate]) {
	ca := newTestCA(t)
	server := ca.issue(t, "dist-1", pki.RoleDistributor)
	var current atomic.Pointer[tls.Certificate]
	current.Store(&server)
	st := &admin.StatusTLS{
		Certificate: func() (*tls.Certificate, error) { return current.Load(), nil },
		CAs:         ca.pool,
	}
	return ca, st, &current
}

func TestStatusTLSOperatorOnly(t *testing.T) {
	ca, st, current := statusTLSFixture(t)
	alice := ca.issue(t, "alice", pki.RoleOperator)
	web := ca.issue(t, "web-01", pki.RoleSubscriber)
	revoked := ca.issue(t, "mallory", pki.RoleOperator)
	revokedSerial := pki.SerialHex(revoked.Leaf)
	st.Revoked = func(c *x509.Certificate) error {
		if pki.SerialHex(c) == revokedSerial {
			return fmt.Errorf("certificate %s is revoked", c.Subject.CommonName)
		}
		return nil
	}
	foreign := newTestCA(t).issue(t, "alice", pki.RoleOperator)
	base := startTLS(t, st, admin.Endpoints{Status: func(context.Context) (any, error) { return map[string]int{"n": 1}, nil }})

	// An operator: every path.
	for _, path := range []string{"/healthz", "/metrics", "/api/status"} {
		code, body, err := tlsGet(t, base+path, ca.pool, &alice)
		if err != nil || code != 200 {
			t.Errorf("operator GET %s: %d %q %v, want 200", path, code, body, err)
		}
	}
	// Another role, a foreign CA, a revoked operator: 403, saying why.
	for _, tt := range []struct {
		name string
		cert tls.Certificate
		want string
	}{
		{"subscriber", web, `certificate "web-01" has role subscriber, not operator`},
		{"foreign CA", foreign, `certificate "alice": not issued by a trusted TED CA`},
		{"revoked", revoked, "certificate mallory is revoked"},
	} {
		for _, path := range []string{"/healthz", "/metrics", "/api/status", "/"} {
			code, body, err := tlsGet(t, base+path, ca.pool, &tt.cert)
			if err != nil || code != http.StatusForbidden || !strings.Contains(body, tt.want) {
				t.Errorf("%s GET %s: %d %q %v, want 403 with %q", tt.name, path, code, body, err, tt.want)
			}
		}
	}
	// No certificate: the handshake requires one.
	if code, body, err := tlsGet(t, base+"/healthz", ca.pool, nil); err == nil {
		t.Errorf("no certificate: %d %q, want the handshake refused", code, body)
	}
	// Plain HTTP is not served.
	if code, _, err := tlsGet(t, strings.Replace(base, "https:", "http:", 1)+"/healthz", nil, nil); err == nil && code == 200 {
		t.Errorf("plain HTTP answered 200")
	}

	// A renewed server certificate is presented from the next handshake.
	renewed := ca.issue(t, "dist-1b", pki.RoleDistributor)
	current.Store(&renewed)
	conf := &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{alice}}
	tr := &http.Transport{TLSClientConfig: conf, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.TLS.PeerCertificates[0].Subject.CommonName; got != "dist-1b" {
		t.Errorf("server certificate after the swap: %q, want dist-1b", got)
	}
}

func TestStatusTLSMetricsOpen(t *testing.T) {
	ca, st, _ := statusTLSFixture(t)
	st.MetricsOpen = true
	alice := ca.issue(t, "alice", pki.RoleOperator)
	web := ca.issue(t, "web-01", pki.RoleSubscriber)
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	pages := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "console") })
	base := startTLS(t, st, admin.Endpoints{Metrics: reg, Pages: pages})

	// /metrics for anyone, with or without a certificate.
	for _, client := range []*tls.Certificate{nil, &web, &alice} {
		code, body, err := tlsGet(t, base+"/metrics", ca.pool, client)
		if err != nil || code != 200 || !strings.Contains(body, "ted_test_total 0") {
			t.Errorf("GET /metrics: %d %q %v, want 200 with the metrics", code, body, err)
		}
	}
	// Every other path: an operator only, a 403 that says why otherwise.
	for _, path := range []string{"/healthz", "/api/status", "/", "/nodes/web-01", "/api/nosuch"} {
		code, body, err := tlsGet(t, base+path, ca.pool, nil)
		if err != nil || code != http.StatusForbidden || !strings.Contains(body, "no client certificate") || !strings.Contains(body, "ted pki issue --role operator") {
			t.Errorf("GET %s without a certificate: %d %q %v, want 403 naming what is needed", path, code, body, err)
		}
		code, body, err = tlsGet(t, base+path, ca.pool, &web)
		if err != nil || code != http.StatusForbidden || !strings.Contains(body, "has role subscriber, not operator") {
			t.Errorf("GET %s as a subscriber: %d %q %v, want 403", path, code, body, err)
		}
	}
	code, body, err := tlsGet(t, base+"/nodes/web-01", ca.pool, &alice)
	if err != nil || code != 200 || body != "console" {
		t.Errorf("operator GET /nodes/web-01: %d %q %v, want the console", code, body, err)
	}
}

// Pages takes every GET the other endpoints do not, on both listeners;
// /api, /healthz and /metrics stay theirs.
func TestPagesCatchAll(t *testing.T) {
	var seen atomic.Value
	pages := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Method + " " + r.URL.Path)
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<h1>console</h1>")
	})
	r := start(t, socketIn(t), admin.Endpoints{
		Pages:  pages,
		Health: func(context.Context) error { return nil },
		Views:  map[string]admin.Action{"packages": func(context.Context, url.Values) (any, error) { return []string{"app"}, nil }},
	})
	for _, path := range []string{"/", "/nodes/web-01", "/events", "/static/app.js", "/healthz/"} {
		code, ctype, body := fetch(t, "GET", r.base+path)
		if code != 200 || ctype != "text/html" || body != "<h1>console</h1>" || seen.Load() != "GET "+path {
			t.Errorf("GET %s: %d %s %q (pages saw %v), want the console", path, code, ctype, body, seen.Load())
		}
	}
	if code, _, body := fetch(t, "HEAD", r.base+"/nodes/web-01"); code != 200 || body != "" || seen.Load() != "HEAD /nodes/web-01" {
		t.Errorf("HEAD: %d %q", code, body)
	}
	seen.Store("")
	for path, want := range map[string]string{
		"/healthz":       "ok",
		"/metrics":       "",
		"/api/status":    "{}",
		"/api/packages":  `"app"`,
		"/api/nosuch":    `unknown view \"nosuch\"`,
		"/api/a/b":       `unknown API path \"/api/a/b\"`,
		"/api/":          `unknown API path`,
		"/api/status/x/": `unknown API path`,
	} {
		code, _, body := fetch(t, "GET", r.base+path)
		if !strings.Contains(body, want) || seen.Load() != "" {
			t.Errorf("GET %s: %d %q (pages saw %v), want its own handler's answer with %q", path, code, body, seen.Load(), want)
		}
	}
	if code, _, _ := fetch(t, "POST", r.base+"/nodes/web-01"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST to a page: %d, want 405", code)
	}
	// The socket serves the console too.
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", r.socket)
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://admin/nodes/web-01")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "<h1>console</h1>" {
		t.Errorf("socket GET /nodes/web-01: %d %q, want the console", resp.StatusCode, body)
	}

	// Without Pages: 404.
	r2 := start(t, socketIn(t), admin.Endpoints{})
	if code, _, _ := fetch(t, "GET", r2.base+"/nodes/web-01"); code != http.StatusNotFound {
		t.Errorf("no Pages: GET /nodes/web-01: %d, want 404", code)
	}
}
