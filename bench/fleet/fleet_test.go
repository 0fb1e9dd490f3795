package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// tedBinary is the ted built for the tests.
var tedBinary string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	// runReference starts this binary again as its server.
	if len(os.Args) > 1 && os.Args[1] == "reference-server" {
		if err := runReferenceServer(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "reference-server:", err)
			return 1
		}
		return 0
	}
	dir, err := os.MkdirTemp("", "fleet-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	noteSources()
	tedBinary = filepath.Join(dir, "ted")
	build := exec.Command("go", "build", "-o", tedBinary, "../../cmd/ted")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build ted:", err)
		return 1
	}
	code := m.Run()
	if code == 0 {
		// Every session, socket and sampler of a run must have ended.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			return 1
		}
	}
	return code
}

// noteSources stats every Go source and module file of the project, so
// that `go test` caches this package's results only while none of them
// changes: the ted binary it runs is built from them, not imported.
func noteSources() {
	_ = filepath.WalkDir("../..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && p != "../.." {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum" {
			_, _ = os.Stat(p)
		}
		return nil
	})
}

// TestFleetShort runs the fleet at N=100 with short windows against the
// real distributor: every simulated subscriber must be admitted, get the
// offer and hold every chunk, the distributor's status must show them so,
// and nothing may be refused, fail or drop. Timings are measured, not
// asserted: the machine is shared.
func TestFleetShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	e, err := newEnv(ctx, tedBinary, dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.N = 100
	// Two endpoints: sessions share sockets, and more than one is used.
	opts.PerSocket = 60
	opts.ConnectTimeout, opts.Settle, opts.Idle = 30*time.Second, 200*time.Millisecond, time.Second
	opts.PublishTimeout, opts.FetchTimeout = 30*time.Second, 30*time.Second
	res, err := e.run(ctx, filepath.Join(dir, "n100"), opts)
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	printTable(&table, []*Result{res})
	t.Logf("fleet at N=100:\n%s", table.String())

	if res.Sockets != 2 {
		t.Errorf("%d sockets for 100 sessions at 60 a socket", res.Sockets)
	}
	if res.Admitted != 100 || res.Offered != 100 || res.Fetched != 100 {
		t.Errorf("admitted %d, offered %d, holding every chunk %d; want all 100", res.Admitted, res.Offered, res.Fetched)
	}
	if res.Chunks < 2 {
		t.Errorf("the revision has %d chunks: a 1 MiB revision has many", res.Chunks)
	}
	if res.ChunksHeld != int64(res.Chunks)*100 {
		t.Errorf("the sims hold %d chunks, want %d × 100", res.ChunksHeld, res.Chunks)
	}
	if res.Refused != 0 || res.DialFailed != 0 || res.HelloFailed != 0 || res.Dropped != 0 || res.FetchFailed != 0 {
		t.Errorf("refused %d, failed dials %d, failed hellos %d, dropped %d, failed fetches %d; want none: %v",
			res.Refused, res.DialFailed, res.HelloFailed, res.Dropped, res.FetchFailed, res.Samples)
	}
	if res.PublishError != "" || res.StatusError != "" || res.StopError != "" {
		t.Errorf("publish: %q, status: %q, distributor stop: %q", res.PublishError, res.StatusError, res.StopError)
	}
	if res.StatusConnected != 100 || res.StatusReceived != 100 {
		t.Errorf("distributor status shows %d connected, %d holding the revision; want 100 and 100", res.StatusConnected, res.StatusReceived)
	}
	if res.IdleRSS <= 0 || res.IdleHeap <= 0 || res.PeakRSS < res.IdleRSS/2 {
		t.Errorf("memory not measured: idle RSS %d, heap %d, peak %d", res.IdleRSS, res.IdleHeap, res.PeakRSS)
	}
	if !res.complete() {
		t.Errorf("run not complete: %+v", res)
	}
}

// TestFleetReferenceShort runs the reference (plain quic-go, reference.go)
// at N=50: every sim is admitted (plain quic-go may refuse a dial from a
// full accept queue; the sims dial again) and reads the whole payload,
// the server's memory and CPU are measured, and it stops cleanly.
func TestFleetReferenceShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	e, err := newEnv(ctx, tedBinary, dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.N = 50
	opts.ConnectTimeout, opts.Settle, opts.Idle = 30*time.Second, 200*time.Millisecond, time.Second
	opts.FetchTimeout = 30 * time.Second
	res, err := e.runReference(ctx, opts, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if res.Admitted != 50 || res.Fetched != 50 {
		t.Errorf("admitted %d, read the payload %d; want all 50 (%v)", res.Admitted, res.Fetched, res.Samples)
	}
	if res.FetchTime <= 0 || res.IdleRSS <= 0 || res.PeakRSS <= 0 {
		t.Errorf("not measured: fetch %v, idle RSS %d, peak %d", res.FetchTime, res.IdleRSS, res.PeakRSS)
	}
	if res.Dropped != 0 || res.FetchFailed != 0 || res.StopError != "" {
		t.Errorf("dropped %d, failed fetches %d, server stop %q", res.Dropped, res.FetchFailed, res.StopError)
	}
	var table strings.Builder
	printTable(&table, []*Result{{N: 50, Reference: res}})
	if !strings.Contains(table.String(), "plain quic-go: RSS idle") {
		t.Errorf("the table has no reference rows:\n%s", table.String())
	}
}

// TestRollupShort runs the roll-up at 300 nodes with short windows: the
// top must show all of them, then the rollout done; a quiet subtree must
// send next to nothing upstream, and the top must answer `ted status`.
// Figures are logged, not asserted, apart from the idle bytes, which are
// counted, not timed.
func TestRollupShort(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	e, err := newEnv(ctx, tedBinary, dir, 16<<10)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.rollup(ctx, filepath.Join(dir, "top"), 300, 3*time.Second, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	res.print(&out)
	t.Log("\n" + out.String())
	if res.RolloutChanges != 900 || res.StatusJSONBytes == 0 {
		t.Errorf("rollout changes %d, status %d bytes", res.RolloutChanges, res.StatusJSONBytes)
	}
	// Idle: keepalives and at most one summary; a whole report (or
	// reports of changes that did not happen) would be far more.
	if res.IdleBytesPerSec*3 > float64(res.FullReportBytes) {
		t.Errorf("idle upstream %.0f B/s over 3 s, a whole report is %d B", res.IdleBytesPerSec, res.FullReportBytes)
	}
}
