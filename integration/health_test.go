//go:build linux

package integration

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// healthz is GET /healthz on the node's status address: the code and the
// body, or -1 and the error.
func (n *node) healthz() (int, string) {
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + n.statusAddr + "/healthz")
	if err != nil {
		return -1, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1, err.Error()
	}
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// waitHealthz waits until /healthz answers code with a body holding every
// one of parts, and returns the body.
func (n *node) waitHealthz(code int, parts ...string) string {
	n.nw.t.Helper()
	var body string
	waitFor(n.nw.t, fmt.Sprintf("%s's /healthz to answer %d %q", n.name, code, parts), func() (bool, string) {
		var got int
		got, body = n.healthz()
		if got != code {
			return false, fmt.Sprintf("%d %s", got, body)
		}
		for _, p := range parts {
			if !strings.Contains(body, p) {
				return false, fmt.Sprintf("%d %s", got, body)
			}
		}
		return true, ""
	})
	return body
}

// scrape returns the daemon's /metrics exposition.
func (n *node) scrape() string {
	n.nw.t.Helper()
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + n.statusAddr + "/metrics")
	if err != nil {
		n.nw.t.Fatalf("scrape %s: %v", n.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		n.nw.t.Fatalf("scrape %s: %v", n.name, err)
	}
	return string(body)
}

// sample is the value of the series named exactly (with its labels, as
// exposed: `ted_subscriber_revisions{state="failed"}`) in an exposition,
// and whether it is there.
func sample(exposition, series string) (float64, bool) {
	for line := range strings.SplitSeq(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// waitSample waits until the daemon exposes series with a value ok likes,
// and returns it.
func (n *node) waitSample(series string, ok func(float64) bool) float64 {
	n.nw.t.Helper()
	var v float64
	waitFor(n.nw.t, fmt.Sprintf("%s's %s", n.name, series), func() (bool, string) {
		var found bool
		v, found = sample(n.scrape(), series)
		return found && ok(v), fmt.Sprintf("%v (exposed %v)", v, found)
	})
	return v
}

// requireBuildInfo fails unless the daemon exposes ted_build_info 1 with
// the version ted version prints.
func requireBuildInfo(t *testing.T, n *node, version string) {
	t.Helper()
	for line := range strings.SplitSeq(n.scrape(), "\n") {
		if strings.HasPrefix(line, "ted_build_info{") {
			if !strings.Contains(line, `version="`+version+`"`) || !strings.Contains(line, `goversion="go`) || !strings.HasSuffix(line, " 1") {
				t.Fatalf("%s: %s, want version %q, a goversion and 1", n.name, line, version)
			}
			return
		}
	}
	t.Fatalf("%s exposes no ted_build_info", n.name)
}

// TestHealthAndMetrics: a subscriber its distributor does not list is
// unhealthy with the distributor's refusal, says it in its status and has
// ted_subscriber_parent_connected 0; one it lists is healthy and connected;
// a publisher daemon counts its builds and pushes; every daemon tells its
// version.
func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	var ver struct {
		Version string `json:"version"`
	}
	tedJSON(t, &ver, "version")

	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-01"}},
	}})

	// web-02 is listed by no channel of dist-1: refused at admission.
	web2 := nw.subscriber("web-02", subscriberSpec{parents: []string{dist1.addr}})
	body := web2.waitHealthz(http.StatusServiceUnavailable,
		"parent dist-1 ("+dist1.addr+") refuses this node", "subscriber web-02 is not a child of any channel of dist-1")
	if strings.Contains(body, "\n") {
		t.Errorf("/healthz reason is more than one line: %q", body)
	}
	if v, ok := sample(web2.scrape(), "ted_subscriber_parent_connected"); !ok || v != 0 {
		t.Errorf("web-02 ted_subscriber_parent_connected %v (exposed %v), want 0", v, ok)
	}
	var st struct {
		Parent      string `json:"parent"`
		ParentError string `json:"parent_error"`
	}
	web2.statusCLI(&st)
	if st.Parent != "" || st.ParentError != body {
		t.Errorf("web-02 status parent %q, parent_error %q; want none and %q", st.Parent, st.ParentError, body)
	}
	text := mustTed(t, "subscriber", "status", "--config", web2.config)
	if !strings.Contains(text.stdout, "parent error: "+body) {
		t.Errorf("ted subscriber status says:\n%s\nwant the line parent error: %s", text.stdout, body)
	}

	// web-01 is listed: healthy and connected.
	web1 := nw.subscriber("web-01", subscriberSpec{parents: []string{dist1.addr}})
	web1.waitHealthz(http.StatusOK, "ok")
	web1.waitSample("ted_subscriber_parent_connected", func(v float64) bool { return v == 1 })
	dist1.waitHealthz(http.StatusOK, "ok")
	if v, ok := sample(dist1.scrape(), "ted_disk_free_bytes"); !ok || v <= 0 {
		t.Errorf("dist-1 ted_disk_free_bytes %v (exposed %v), want > 0", v, ok)
	}

	// A publisher daemon building app and pushing it to dist-1.
	pub := nw.newNode("pub-1", "publisher", map[string]any{
		"name":        "pub-1",
		"data_dir":    "./var/pub-1",
		"store":       "./var/pub-1/store",
		"sign_key":    "pki/publisher.key",
		"tls":         map[string]string{"ca": "pki/ca.crt", "cert": "pki/pub-1.crt", "key": "pki/pub-1.key"},
		"distributor": dist1.addr,
		"distributions": map[string]any{
			"app": map[string]any{"from": filepath.Base(nw.src), "version": "1.0.0", "channels": []string{"web"}},
		},
	})
	pub.startFresh()
	pub.waitSample(`ted_publisher_pushes_total{result="succeeded"}`, func(v float64) bool { return v == 1 })
	exp := pub.scrape()
	for series, ok := range map[string]func(float64) bool{
		`ted_publisher_builds_total{result="new"}`:           func(v float64) bool { return v == 1 },
		`ted_publisher_builds_total{result="failed"}`:        func(v float64) bool { return v == 0 },
		`ted_publisher_pushes_total{result="failed"}`:        func(v float64) bool { return v == 0 },
		"ted_publisher_published_revisions_total":            func(v float64) bool { return v == 1 },
		"ted_publisher_distributor_connected":                func(v float64) bool { return v == 1 },
		"ted_publisher_sent_bytes_total":                     func(v float64) bool { return v > 0 },
		"ted_publisher_offered_bytes_total":                  func(v float64) bool { return v > 0 },
		"ted_publisher_last_push_success_timestamp_seconds":  func(v float64) bool { return v > float64(time.Now().Add(-time.Hour).Unix()) },
		"ted_publisher_last_build_success_timestamp_seconds": func(v float64) bool { return v > float64(time.Now().Add(-time.Hour).Unix()) },
		"ted_certificate_expiry_timestamp_seconds":           func(v float64) bool { return v > float64(time.Now().Unix()) },
	} {
		if v, found := sample(exp, series); !found || !ok(v) {
			t.Errorf("pub-1 %s = %v (exposed %v)", series, v, found)
		}
	}

	// web-01 extracts it, and counts it by state.
	web1.waitState(1, "extracted")
	web1.waitSample(`ted_subscriber_revisions{state="extracted"}`, func(v float64) bool { return v == 1 })
	if v, ok := sample(web1.scrape(), `ted_subscriber_revisions{state="failed"}`); !ok || v != 0 {
		t.Errorf(`web-01 ted_subscriber_revisions{state="failed"} %v (exposed %v), want 0`, v, ok)
	}
	for _, n := range []*node{dist1, web1, web2, pub} {
		requireBuildInfo(t, n, ver.Version)
	}
}

// TestClusterHealthAndMetrics: both nodes of a cluster are healthy, the
// active one exposes its subscriber's series (connected to the parent) and
// the standby the process's, its certificate's and its version.
func TestClusterHealthAndMetrics(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-c1"}},
	}, clusters: map[string][]string{"web-c1": {"web-c1"}}})
	c := nw.cluster("web-c1", []string{"c1-a", "c1-b"}, dist1)
	active := c.active(t)
	var standby *node
	for _, n := range c.nodes {
		if n != active {
			standby = n
		}
	}
	active.waitHealthz(http.StatusOK, "ok")
	standby.waitHealthz(http.StatusOK, "ok")
	active.waitSample("ted_subscriber_parent_connected", func(v float64) bool { return v == 1 })
	exp := standby.scrape()
	if _, ok := sample(exp, "ted_subscriber_parent_connected"); ok {
		t.Errorf("standby %s exposes ted_subscriber_parent_connected: it has no subscriber running", standby.name)
	}
	if v, ok := sample(exp, "ted_certificate_expiry_timestamp_seconds"); !ok || v < float64(time.Now().Unix()) {
		t.Errorf("standby %s ted_certificate_expiry_timestamp_seconds %v (exposed %v)", standby.name, v, ok)
	}
	if !strings.Contains(exp, "ted_build_info{") || !strings.Contains(active.scrape(), "ted_build_info{") {
		t.Errorf("a cluster node exposes no ted_build_info")
	}
}
