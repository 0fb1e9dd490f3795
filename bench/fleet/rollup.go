package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"time"

	"ted/admin"
	"ted/distribution"
	tedd "ted/distributor"
	tedfleet "ted/fleet"
	"ted/pki"
	"ted/series"
	"ted/store"
	"ted/transport"
)

// Roll-up: how much the state of a subtree of N nodes costs upstream, at
// the top and to ask for (bench/README.md, "Roll-up").
//
// The top is the real `ted distributor run`. Below it runs, in this
// process, a real distributor (package distributor, with its reporter
// and table of the subtree) whose N subscribers are simulated: their
// records are put in its table as its children's sessions would put them.
// It reports up over real QUIC, through a UDP proxy that counts the bytes
// both ways. Measured: the time until the top's view holds all N; the
// bytes per second upstream over an idle window, and over a rollout in
// which every node goes receiving, received, extracted; the time until
// the top shows the rollout done; the top's RSS before and after; and the
// time of `ted status --json` and `ted status` at the top.
//
// References in the same run: a reporter that sent the whole subtree
// every second (the size of one whole report, compressed, per second),
// the top's RSS before the subtree arrived, and `ted version` for the
// cost of starting the binary.
//
//	go run ./bench/fleet rollup [-nodes 10000] [-idle 60s] [-rollout 30s]
func runRollup(args []string) error {
	fs := flag.NewFlagSet("rollup", flag.ContinueOnError)
	var (
		nodes   = fs.Int("nodes", 10000, "simulated subscribers below the middle distributor")
		idle    = fs.Duration("idle", 60*time.Second, "idle window")
		rollout = fs.Duration("rollout", 30*time.Second, "how long the rollout's changes are spread over")
		tedBin  = fs.String("ted", "", "the ted binary (default: built from this module)")
		work    = fs.String("dir", "", "work directory (default: a temporary one, removed at the end)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := *work
	var err error
	if dir == "" {
		if dir, err = os.MkdirTemp("", "rollup-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	if *tedBin == "" {
		*tedBin = filepath.Join(dir, "ted")
		fmt.Fprintf(os.Stderr, "building ted into %s\n", *tedBin)
		if err := buildTed(ctx, *tedBin); err != nil {
			return err
		}
	}
	e, err := newEnv(ctx, *tedBin, dir, 64<<10)
	if err != nil {
		return err
	}
	res, err := e.rollup(ctx, filepath.Join(dir, "top"), *nodes, *idle, *rollout)
	if err != nil {
		return err
	}
	res.print(os.Stdout)
	return nil
}

// rollupResult is what the roll-up measures.
type rollupResult struct {
	Nodes                     int
	FullReportBytes           int64
	AllShown                  time.Duration
	IdleBytesPerSec           float64
	IdleFrameBytesPerSec      float64
	Rollout                   time.Duration
	RolloutChanges            int
	RolloutBytesPerSec        float64
	DoneShownAfter            time.Duration
	TopRSSBefore, TopRSSAfter int64
	TopPeakRSS                int64
	StatusJSON, StatusText    time.Duration
	StatusJSONBytes           int
	Version                   time.Duration
}

func (r *rollupResult) print(w io.Writer) {
	naive := float64(r.FullReportBytes)
	fmt.Fprintf(w, "roll-up: %d simulated subscribers below one middle distributor, reporting to a real top distributor\n\n", r.Nodes)
	fmt.Fprintf(w, "all %d shown at the top after                %v\n", r.Nodes, r.AllShown.Round(time.Millisecond))
	fmt.Fprintf(w, "upstream, idle (UDP bytes through the proxy)  %.0f B/s   (frames %.0f B/s; a whole report every second would be %.0f B/s: %.5f×)\n",
		r.IdleBytesPerSec, r.IdleFrameBytesPerSec, naive, r.IdleBytesPerSec/naive)
	fmt.Fprintf(w, "upstream, rollout (%d changes over %v)   %.0f B/s   (%.2f× a whole report every second)\n",
		r.RolloutChanges, r.Rollout.Round(time.Second), r.RolloutBytesPerSec, r.RolloutBytesPerSec/naive)
	fmt.Fprintf(w, "rollout done shown at the top after the last change  %v\n", r.DoneShownAfter.Round(time.Millisecond))
	fmt.Fprintf(w, "top RSS                                       %s after (%s before the subtree: %.2f×), peak %s\n",
		mib(r.TopRSSAfter), mib(r.TopRSSBefore), float64(r.TopRSSAfter)/float64(r.TopRSSBefore), mib(r.TopPeakRSS))
	fmt.Fprintf(w, "ted status --json at the top                  %v (%s of JSON); ted version %v: %.1f×\n",
		r.StatusJSON.Round(time.Millisecond), humanBytes(int64(r.StatusJSONBytes)), r.Version.Round(time.Millisecond), float64(r.StatusJSON)/float64(r.Version))
	fmt.Fprintf(w, "ted status (rollout view) at the top          %v\n", r.StatusText.Round(time.Millisecond))
}

// blockingListener is a middle distributor's listener: no child ever
// connects; its children are simulated in its table.
type blockingListener struct{}

func (blockingListener) Accept(ctx context.Context) (transport.Session, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (e *env) rollup(ctx context.Context, dir string, n int, idle, rollout time.Duration) (*rollupResult, error) {
	res := &rollupResult{Nodes: n}
	top, err := e.startDistributor(ctx, dir, 0)
	if err != nil {
		return nil, err
	}
	defer top.stop()
	if res.TopRSSBefore, _, err = memStatus(top.pid()); err != nil {
		return nil, err
	}
	proxy, err := newCountingProxy(top.addr)
	if err != nil {
		return nil, err
	}
	defer proxy.close()

	// The middle distributor: a member of the group the top lists.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cert, err := e.ca.Sign(pki.Spec{Name: "mid-1", Role: pki.RoleDistributor, Groups: []string{group}}, key.Public())
	if err != nil {
		return nil, err
	}
	cred, err := transport.NewCredentials(e.pool, tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, pki.RoleDistributor)
	if err != nil {
		return nil, err
	}
	keys, err := pki.LoadPublicKeys([]string{e.signKey + ".pub"})
	if err != nil {
		return nil, err
	}
	trust := distribution.NewTrust(keys...)
	cfg := tedd.DefaultConfig()
	cfg.Name, cfg.Agent, cfg.Trust = "mid-1", "bench", trust
	cfg.Parents.Addrs = []string{proxy.addr()}
	cfg.Channels = map[string]tedd.Channel{channel: {Children: []string{"sim-*"}}}
	mid, err := tedd.New(cfg, store.NewMemory(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	midCtx, stopMid := context.WithCancel(ctx)
	midDone := make(chan error, 1)
	go func() {
		midDone <- mid.Run(midCtx, blockingListener{}, func(ctx context.Context, addr string) (transport.Session, error) {
			return transport.Dial(ctx, addr, cred, pki.RoleDistributor, transport.DefaultQUICConfig())
		})
	}()
	defer func() {
		stopMid()
		<-midDone
	}()

	// The subtree: N subscribers holding app@1.
	table := mid.Fleet()
	node := func(i int, revs ...transport.RevisionState) transport.NodeState {
		return transport.NodeState{Name: simName(i), Role: "subscriber", Agent: "bench", Channels: []string{channel}, Connected: true, Revisions: revs}
	}
	extracted1 := transport.RevisionState{Name: "app", Revision: 1, Version: "1.0.0", State: "extracted"}
	start := time.Now()
	for i := range n {
		table.Child(node(i, extracted1))
	}
	all, _, _, _, _, _ := table.Changes(0)
	full, err := transport.Prepare(&transport.Subtree{Full: true, Nodes: all[:min(len(all), transport.MaxSubtreeNodes)]})
	if err != nil {
		return nil, err
	}
	// One whole report is ceil(N/MaxSubtreeNodes) messages like this one.
	res.FullReportBytes = int64(full.Size()) * int64((len(all)+transport.MaxSubtreeNodes-1)/transport.MaxSubtreeNodes)
	socket := admin.SocketPath(top.dataDir)
	if err := waitView(ctx, socket, time.Minute, func(v *tedfleet.View) bool { return len(v.Nodes) >= n+2 }); err != nil {
		return nil, fmt.Errorf("the subtree at the top: %w", err)
	}
	res.AllShown = time.Since(start)
	fmt.Fprintf(os.Stderr, "all %d at the top after %v; idle for %v\n", n, res.AllShown, idle)

	// Idle.
	if err := sleep(ctx, 5*time.Second); err != nil {
		return nil, err
	}
	frames := func() float64 {
		v, _ := series.Values(mid.Registry())
		return v["ted_fleet_report_bytes_total"]
	}
	b0, f0, t0 := proxy.up.Load(), frames(), time.Now()
	if err := sleep(ctx, idle); err != nil {
		return nil, err
	}
	secs := time.Since(t0).Seconds()
	res.IdleBytesPerSec = float64(proxy.up.Load()-b0) / secs
	res.IdleFrameBytesPerSec = (frames() - f0) / secs
	fmt.Fprintf(os.Stderr, "idle: %.0f B/s upstream; rollout over %v\n", res.IdleBytesPerSec, rollout)

	// The rollout: every node receiving (half way), received, extracted,
	// each phase spread over a third of the window.
	res.Rollout = rollout
	b0, t0 = proxy.up.Load(), time.Now()
	phases := []func(i int) transport.NodeState{
		func(i int) transport.NodeState {
			return node(i, extracted1, transport.RevisionState{Name: "app", Revision: 2, Version: "2.0.0", State: "receiving", Chunks: 100, HaveChunks: 50})
		},
		func(i int) transport.NodeState {
			return node(i, extracted1, transport.RevisionState{Name: "app", Revision: 2, Version: "2.0.0", State: "received", Chunks: 100, HaveChunks: 100})
		},
		func(i int) transport.NodeState {
			superseded := extracted1
			superseded.State = "superseded"
			return node(i, superseded, transport.RevisionState{Name: "app", Revision: 2, Version: "2.0.0", State: "extracted"})
		},
	}
	per := rollout / time.Duration(len(phases))
	for _, phase := range phases {
		ps := time.Now()
		for i := range n {
			table.Child(phase(i))
			res.RolloutChanges++
			if i%100 == 99 {
				if wait := time.Until(ps.Add(per * time.Duration(i+1) / time.Duration(n))); wait > 0 {
					if err := sleep(ctx, wait); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	last := time.Now()
	if err := waitView(ctx, socket, time.Minute, func(v *tedfleet.View) bool {
		for _, r := range v.Rollouts {
			if r.Name == "app" && r.Revision == 2 {
				return r.Counts["extracted"] == n
			}
		}
		return false
	}); err != nil {
		return nil, fmt.Errorf("the rollout at the top: %w", err)
	}
	res.DoneShownAfter = time.Since(last)
	res.RolloutBytesPerSec = float64(proxy.up.Load()-b0) / time.Since(t0).Seconds()

	if res.TopRSSAfter, res.TopPeakRSS, err = memStatus(top.pid()); err != nil {
		return nil, err
	}
	// ted status at the top: the best of three, and ted version.
	timeIt := func(args ...string) (time.Duration, int, error) {
		best, size := time.Duration(0), 0
		for range 3 {
			t := time.Now()
			out, err := exec.CommandContext(ctx, e.ted, args...).Output()
			if err != nil {
				return 0, 0, fmt.Errorf("ted %v: %w", args, err)
			}
			if d := time.Since(t); best == 0 || d < best {
				best, size = d, len(out)
			}
		}
		return best, size, nil
	}
	if res.StatusJSON, res.StatusJSONBytes, err = timeIt("status", "--config", top.config, "--json"); err != nil {
		return nil, err
	}
	if res.StatusText, _, err = timeIt("status", "--config", top.config); err != nil {
		return nil, err
	}
	if res.Version, _, err = timeIt("version"); err != nil {
		return nil, err
	}
	return res, nil
}

// waitView polls the top's view until ok, at most timeout.
func waitView(ctx context.Context, socket string, timeout time.Duration, ok func(*tedfleet.View) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		var v tedfleet.View
		err := admin.Get(ctx, socket, "/api/fleet", &v)
		if err == nil && ok(&v) {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("not there")
			}
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// countingProxy relays UDP between one client and target, counting the
// bytes from the client (up) and to it (down).
type countingProxy struct {
	conn     *net.UDPConn
	target   *net.UDPAddr
	up, down atomic.Int64
	done     chan struct{}
}

func newCountingProxy(target string) (*countingProxy, error) {
	t, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	p := &countingProxy{conn: conn, target: t, done: make(chan struct{})}
	go p.run()
	return p, nil
}

func (p *countingProxy) addr() string { return p.conn.LocalAddr().String() }

func (p *countingProxy) close() {
	p.conn.Close()
	<-p.done
}

// run relays: one upstream socket per client address.
func (p *countingProxy) run() {
	defer close(p.done)
	ups := map[string]*net.UDPConn{}
	defer func() {
		for _, u := range ups {
			u.Close()
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		up := ups[from.String()]
		if up == nil {
			if up, err = net.DialUDP("udp", nil, p.target); err != nil {
				continue
			}
			ups[from.String()] = up
			go func(up *net.UDPConn, client *net.UDPAddr) {
				b := make([]byte, 64<<10)
				for {
					n, err := up.Read(b)
					if err != nil {
						return
					}
					p.down.Add(int64(n))
					_, _ = p.conn.WriteToUDP(b[:n], client)
				}
			}(up, from)
		}
		p.up.Add(int64(n))
		_, _ = up.Write(buf[:n])
	}
}
