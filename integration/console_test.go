//go:build linux

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"ted/fleet"
)

// chromiumBinary is the headless browser the console test drives, or "".
// TED_CHROMIUM names one; otherwise Debian's chromium or a Chrome on PATH.
func chromiumBinary() string {
	if p := os.Getenv("TED_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// fleetView is GET /api/fleet on n's status address.
func (n *node) fleetView() (fleet.View, error) {
	var v fleet.View
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + n.statusAddr + "/api/fleet")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("GET /api/fleet: %s", resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&v)
	return v, err
}

// waitRollout waits until dist's view counts every one of subscribers as
// having app@rev extracted.
func waitRollout(t *testing.T, dist *node, rev uint64, subscribers int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s's view: app@%d extracted by %d subscribers", dist.name, rev, subscribers), func() (bool, string) {
		v, err := dist.fleetView()
		if err != nil {
			return false, err.Error()
		}
		for _, r := range v.Rollouts {
			if r.Name == "app" && r.Revision == rev {
				return r.Subscribers == subscribers && r.Counts["extracted"] == subscribers, fmt.Sprintf("%+v", r)
			}
		}
		return false, fmt.Sprintf("no rollout of app@%d in %+v", rev, v.Rollouts)
	})
}

// TestConsoleInBrowser opens the web console of a real distributor, the
// top of two tiers with three subscribers, in headless Chromium: the tree
// shows every node, the overview each revision's progress, and a second
// revision and a subscriber that stops reach the open pages without a
// reload. Screenshots go to TED_SCREENSHOT_DIR, or the test's artifact
// directory (go test -artifacts -outputdir DIR keeps it).
//
// It needs Chromium (Debian: apt-get install -y chromium) and skips
// without it, unless TED_REQUIRE_BROWSER is set (.ci/run sets it).
func TestConsoleInBrowser(t *testing.T) {
	browser := chromiumBinary()
	if browser == "" {
		const why = "no Chromium found (install it: apt-get install -y chromium; or set TED_CHROMIUM to a Chrome binary)"
		if os.Getenv("TED_REQUIRE_BROWSER") != "" {
			t.Fatal(why + "; TED_REQUIRE_BROWSER is set (.ci/run)")
		}
		t.Skip(why)
	}
	nw := newNetwork(t)
	dist1, dist2 := twoTiers(nw, []string{"web-03"}, []string{"web-01", "web-02"})
	web3 := nw.subscriber("web-03", subscriberSpec{parents: []string{dist1.addr}})
	nw.subscriber("web-01", subscriberSpec{parents: []string{dist2.addr}})
	nw.subscriber("web-02", subscriberSpec{parents: []string{dist2.addr}})
	nw.build("1.0.0")
	nw.publish("app", dist1)
	waitRollout(t, dist1, 1, 3)

	shots := os.Getenv("TED_SCREENSHOT_DIR")
	if shots == "" {
		shots = t.ArtifactDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	base := "http://" + dist1.statusAddr

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900))...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer func() {
		cancel()
		cancelAlloc()
	}()
	// What the pages say on the console: an exception, a refused script
	// or style (the console's Content-Security-Policy) fails the test.
	// The first run starts the browser (only one call may do that), then
	// Console subscribes, before any page is opened.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", browser, err)
	}
	msgs := chromedp.Console(ctx)
	var mu sync.Mutex
	var messages []string
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				messages = append(messages, m.String())
				mu.Unlock()
			}
		}
	}()
	defer func() {
		cancel()
		<-consoleDone
		mu.Lock()
		defer mu.Unlock()
		for _, m := range messages {
			t.Errorf("browser console: %s", m)
		}
	}()
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string, out any) {
		t.Helper()
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("evaluate %s: %v in %s", expr, err, raw)
		}
	}
	// waitDOM polls expr in the page until it is true: the page changes
	// by itself, from the stream of updates.
	waitDOM := func(what, expr string) {
		t.Helper()
		waitCtx, stop := context.WithTimeout(ctx, waitTimeout)
		defer stop()
		if _, err := chromedp.Run(waitCtx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(waitTimeout))); err != nil {
			var html string
			eval(`document.getElementById("main") ? document.getElementById("main").outerHTML : document.documentElement.outerHTML`, &html)
			t.Fatalf("waiting for %s: %v\npage:\n%s", what, err, html)
		}
	}
	screenshot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(shots, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}

	// The tree: every node, under its parent, with app@1 extracted on each
	// subscriber.
	run("open /tree", chromedp.Navigate(base+"/tree"), chromedp.WaitVisible("main#main"))
	var names []string
	eval(`Array.from(document.querySelectorAll("tr[data-node]"), tr => tr.dataset.node)`, &names)
	if want := []string{"dist-1", "dist-2", "web-01", "web-02", "web-03"}; !slices.Equal(names, want) {
		t.Fatalf("tree rows %v, want %v", names, want)
	}
	for _, web := range []string{"web-01", "web-02", "web-03"} {
		var state string
		eval(fmt.Sprintf(`document.querySelector('tr[data-node=%q] [data-dist="app@1"]').dataset.state`, web), &state)
		if state != "extracted" {
			t.Errorf("tree: %s has app@1 %q", web, state)
		}
	}
	var branch string
	eval(`document.querySelector('tr[data-node="web-01"] .branch').textContent`, &branch)
	if !strings.Contains(branch, "├─") && !strings.Contains(branch, "└─") {
		t.Errorf("web-01 is not drawn under dist-2: %q", branch)
	}

	// The overview: app@1's progress, 3 of 3.
	run("open /", chromedp.Navigate(base+"/"), chromedp.WaitVisible(`section[data-rollout="app@1"]`))
	var progress struct {
		Extracted   string `json:"extracted"`
		Subscribers string `json:"subscribers"`
		Bar         bool   `json:"bar"`
		Summary     string `json:"summary"`
	}
	eval(`(() => { const s = document.querySelector('section[data-rollout="app@1"]');
		return {extracted: s.dataset.extracted, subscribers: s.dataset.subscribers,
			bar: !!s.querySelector('[role="progressbar"] rect[data-state="extracted"]'),
			summary: document.querySelector(".summary").dataset.subscribers}; })()`, &progress)
	if progress.Extracted != "3" || progress.Subscribers != "3" || !progress.Bar || progress.Summary != "3" {
		t.Errorf("overview of app@1: %+v", progress)
	}
	waitDOM("the page to follow the stream", `window.tedConsole && window.tedConsole.live`)
	screenshot("console-overview.png")

	// A second revision, published while the page is open, shows up in
	// it without a reload (the mark set in the page stays).
	eval(`window.tedMark = 42`, new(int))
	writeFile(t, filepath.Join(nw.src, "etc/app.conf"), []byte("port = 8080\n"), 0o640)
	nw.build("2.0.0")
	nw.publish("app", dist1)
	waitDOM("app@2 extracted by 3 of 3 on the open overview",
		`(() => { const s = document.querySelector('section[data-rollout="app@2"]');
			return !!s && s.dataset.extracted === "3" && s.dataset.subscribers === "3"; })()`)
	var mark struct {
		Mark    int `json:"mark"`
		Updates int `json:"updates"`
	}
	eval(`({mark: window.tedMark, updates: window.tedConsole.updates})`, &mark)
	if mark.Mark != 42 || mark.Updates == 0 {
		t.Errorf("the overview was reloaded, not updated: %+v", mark)
	}
	screenshot("console-overview-app2.png")

	// A node's page: its revisions and its events.
	run("open web-01's page", chromedp.Navigate(base+"/nodes/web-01"), chromedp.WaitVisible(`tr[data-dist="app@2"]`))
	var kinds []string
	eval(`Array.from(document.querySelectorAll("tr[data-kind]"), tr => tr.dataset.kind)`, &kinds)
	if !slices.Contains(kinds, "extracted") || !slices.Contains(kinds, "first_seen") {
		t.Errorf("web-01's events: %v", kinds)
	}
	var notFound int64
	resp, err := http.Get(base + "/nodes/nobody")
	if err == nil {
		notFound = int64(resp.StatusCode)
		resp.Body.Close()
	}
	if notFound != http.StatusNotFound {
		t.Errorf("GET /nodes/nobody: %d, %v", notFound, err)
	}

	// A subscriber that stops: the open tree says so.
	run("open /tree again", chromedp.Navigate(base+"/tree"), chromedp.WaitVisible(`tr[data-node="web-03"]`))
	waitDOM("the tree to follow the stream", `window.tedConsole && window.tedConsole.live`)
	eval(`window.tedMark = 43`, new(int))
	web3.stop()
	waitDOM("web-03 disconnected on the open tree", `document.querySelector('tr[data-node="web-03"]').dataset.connected === "false"`)
	eval(`window.tedMark`, &mark.Mark)
	if mark.Mark != 43 {
		t.Errorf("the tree was reloaded, not updated")
	}
	screenshot("console-tree.png")
}
