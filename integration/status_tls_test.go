package integration

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"ted/pki"
)

// TestStatusListenOffLoopback: a distributor whose status_listen is not a
// loopback address refuses to start without status_tls, saying what to
// add; with it, it serves its status endpoints over HTTPS to an operator
// certificate only.
func TestStatusListenOffLoopback(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	nw.issue("dist-1", "distributor")
	nw.issue("alice", "operator")
	nw.issue("web-01", "subscriber")

	// Plain HTTP on every address: refused at start, exit 2.
	plain := filepath.Join(nw.dir, "dist-plain.yaml")
	writeFile(t, plain, []byte("name: dist-1\nlisten: "+freePort(t, "udp")+"\nstatus_listen: 0.0.0.0:0\ndata_dir: ./var/dist-plain\n"+
		"tls: {ca: pki/ca.crt, cert: pki/dist-1.crt, key: pki/dist-1.key}\ntrust: [pki/publisher.key.pub]\n"+
		"channels:\n  web:\n    publishers: [pub-1]\n"), 0o644)
	r := tedExits(t, "distributor", "run", "--config", plain)
	want := "ted: " + plain + `:3: status_listen: "0.0.0.0:0" is not a loopback address, and the status endpoints are not served there as plain HTTP: add status_tls: true`
	if r.code != 2 || !strings.HasPrefix(lastLine(r.stderr), want) || !strings.Contains(r.stderr, "ted pki issue --role operator") {
		t.Errorf("%s\nwant exit 2 and a last line starting\n%s", r, want)
	}
	if _, err := os.Stat(filepath.Join(nw.dir, "var", "dist-plain", "admin.sock")); err == nil {
		t.Error("the refused daemon left an admin socket")
	}
	// ted config check says the same.
	r = ted(t, "config", "check", plain)
	if r.code != 2 || !strings.Contains(r.stdout+r.stderr, strings.TrimPrefix(want, "ted: ")) {
		t.Errorf("config check: %s\nwant exit 2 with %s", r, want)
	}

	// With status_tls: HTTPS with the node's certificate, operators only.
	n := nw.newNode("dist-1", "distributor", map[string]any{
		"name":          "dist-1",
		"listen":        freePort(t, "udp"),
		"status_listen": "0.0.0.0:0",
		"status_tls":    true,
		"data_dir":      "./var/dist-1",
		"tls":           map[string]string{"ca": "pki/ca.crt", "cert": "pki/dist-1.crt", "key": "pki/dist-1.key"},
		"trust":         nw.relTrust(nil),
		"channels":      map[string]any{"web": map[string]any{"publishers": []string{"pub-1"}}},
	})
	data, err := json.Marshal(n.values)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, n.config, data, 0o644)
	if err := n.tryStart(); err != nil {
		t.Fatalf("start with status_tls: %v", err)
	}
	line := n.waitLog("status endpoints listening", "scheme=https")
	m := regexp.MustCompile(`addr=\S*:(\d+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no port in %q", line)
	}
	url := "https://127.0.0.1:" + m[1] + "/healthz"

	pool, err := pki.LoadCertPool(filepath.Join(nw.pki, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	client := func(name string) *http.Client {
		// The node's certificate names the node (ted pki issue --host):
		// verified as dist-1 while dialled by address.
		conf := &tls.Config{RootCAs: pool, ServerName: "dist-1"}
		if name != "" {
			c, err := tls.LoadX509KeyPair(filepath.Join(nw.pki, name+".crt"), filepath.Join(nw.pki, name+".key"))
			if err != nil {
				t.Fatal(err)
			}
			conf.Certificates = []tls.Certificate{c}
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: conf, DisableKeepAlives: true}}
	}
	base := strings.TrimSuffix(url, "/healthz")
	getPath := func(name, path string) (int, string, error) {
		resp, err := client(name).Get(base + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	get := func(name string) (int, string, error) { return getPath(name, "/healthz") }
	code, body, err := get("alice")
	if err != nil || code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("operator alice: %d %q %v, want 200 ok", code, body, err)
	}
	code, body, err = get("web-01")
	if err != nil || code != http.StatusForbidden || !strings.Contains(body, `certificate "web-01" has role subscriber, not operator`) {
		t.Errorf("subscriber web-01: %d %q %v, want 403 saying why", code, body, err)
	}
	if code, body, err := get(""); err == nil {
		t.Errorf("no client certificate: %d %q, want the handshake refused", code, body)
	}
	// The web console and the fleet view go the same way: to operators.
	code, body, err = getPath("alice", "/tree")
	if err != nil || code != 200 || !strings.Contains(body, `data-node="dist-1"`) {
		t.Errorf("operator alice, the console's tree: %d %v\n%.300s", code, err, body)
	}
	code, body, err = getPath("alice", "/api/fleet")
	if err != nil || code != 200 || !strings.Contains(body, `"node": "dist-1"`) {
		t.Errorf("operator alice, /api/fleet: %d %v\n%.300s", code, err, body)
	}
	for _, path := range []string{"/", "/api/fleet", "/events"} {
		if code, _, err := getPath("web-01", path); err != nil || code != http.StatusForbidden {
			t.Errorf("subscriber web-01, %s: %d %v, want 403", path, code, err)
		}
	}
	// Plain HTTP gets no answer from the HTTPS listener.
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+m[1], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "GET /healthz HTTP/1.0\r\n\r\n")
	reply, _ := io.ReadAll(conn)
	conn.Close()
	if strings.Contains(string(reply), "\r\n\r\nok") {
		t.Errorf("plain HTTP answered: %q", reply)
	}
}
