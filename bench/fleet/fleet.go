package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"ted/transport"
)

// Options tune one run of the fleet.
type Options struct {
	// N is the number of simulated subscribers.
	N int
	// PerSocket is how many sessions share one UDP socket (one
	// transport.Endpoint).
	PerSocket int
	// ConnectTimeout bounds the wait for all N to be admitted; Settle is
	// the wait after that before the idle window, so the handshakes'
	// garbage is collected (ted hands it back to the system 30 s and 60 s
	// after its last collection: the default lets both happen before the
	// window, as the reference server's happen at once); Idle is the
	// window over which the idle CPU is measured.
	ConnectTimeout, Settle, Idle time.Duration
	// PublishTimeout bounds `ted publish`; FetchTimeout the wait, from the
	// start of the publish, for every sim to hold every chunk.
	PublishTimeout, FetchTimeout time.Duration
	// SampleEvery is how often the distributor's RSS is sampled during the
	// publish.
	SampleEvery time.Duration
	// Progress receives a line at each step; nil: none.
	Progress io.Writer
}

// DefaultOptions are the long run's: a minute of idle, and up to five
// minutes for anything to complete.
func DefaultOptions() Options {
	return Options{
		PerSocket:      1000,
		ConnectTimeout: 5 * time.Minute,
		Settle:         75 * time.Second,
		Idle:           time.Minute,
		PublishTimeout: 2 * time.Minute,
		FetchTimeout:   5 * time.Minute,
		SampleEvery:    20 * time.Millisecond,
	}
}

// Result is what one run measured. Durations are zero, and the matching
// count below N, where something never completed.
type Result struct {
	N int `json:"n"`
	// Children is how the distributor's config named the sims:
	// "group:fleet" or "names" (every name listed).
	Children string `json:"children"`
	Sockets  int    `json:"sockets"`
	// Admitted counts the sims admitted (hello answered) within
	// ConnectTimeout, ConnectTime when the last was.
	Admitted    int           `json:"admitted"`
	ConnectTime time.Duration `json:"connect_ns"`
	// IdleRSS and IdleHeap (go_memstats_heap_inuse_bytes) are the
	// distributor's at the end of the idle window; IdleCPUPerMinute its
	// CPU-seconds per minute over that window.
	IdleRSS          int64         `json:"idle_rss_bytes"`
	IdleHeap         int64         `json:"idle_heap_inuse_bytes"`
	IdleWindow       time.Duration `json:"idle_window_ns"`
	IdleCPUPerMinute float64       `json:"idle_cpu_s_per_min"`
	// From the start of `ted publish`: when the last sim got the offer,
	// and when the last held every chunk of the revision.
	Offered   int           `json:"offered"`
	OfferTime time.Duration `json:"offer_ns"`
	Fetched   int           `json:"fetched"`
	FetchTime time.Duration `json:"fetch_ns"`
	Chunks    int           `json:"chunks"`
	// ChunksHeld sums the chunks of the revision the sims held when the
	// wait ended: how far the fetches got when not all completed.
	ChunksHeld  int64 `json:"chunks_held"`
	PeakRSS     int64 `json:"peak_rss_bytes"`
	PeakFromHWM bool  `json:"peak_from_vmhwm"`
	// PublishTime is the wall time of `ted publish`; PublishError, if
	// set, why it failed (a timeout included).
	PublishTime  time.Duration `json:"publish_ns"`
	PublishError string        `json:"publish_error,omitempty"`
	// StatusTime is the wall time of `ted distributor status --json`
	// after the publish; StatusConnected and StatusReceived count the
	// children it shows connected and holding the revision.
	StatusTime      time.Duration `json:"status_ns"`
	StatusError     string        `json:"status_error,omitempty"`
	StatusConnected int           `json:"status_connected"`
	StatusReceived  int           `json:"status_received"`
	// Failures: dials refused and otherwise failed, hellos failed,
	// sessions dropped after admission, fetches failed (all retried).
	Refused     int64               `json:"refused_dials"`
	DialFailed  int64               `json:"failed_dials"`
	HelloFailed int64               `json:"failed_hellos"`
	Dropped     int64               `json:"dropped_sessions"`
	FetchFailed int64               `json:"failed_fetches"`
	Samples     map[string][]string `json:"error_samples,omitempty"`
	// DistributorCPU is the distributor's CPU time over the whole run,
	// GeneratorCPU this process's over the same.
	DistributorCPU time.Duration `json:"distributor_cpu_ns"`
	GeneratorCPU   time.Duration `json:"generator_cpu_ns"`
	// StopError is how the distributor ended, if not cleanly.
	StopError string `json:"stop_error,omitempty"`
	// Reference is the same N against plain quic-go (reference.go): its
	// Fetched and FetchTime count sims that read the payload, its
	// DistributorCPU is the reference server's.
	Reference *Result `json:"reference,omitempty"`
	Dir       string  `json:"dir"`
}

// complete reports whether every sim was admitted, offered the revision
// and held it, and nothing failed on the way.
func (r *Result) complete() bool {
	return r.Admitted == r.N && r.Offered == r.N && r.Fetched == r.N &&
		r.Refused == 0 && r.DialFailed == 0 && r.HelloFailed == 0 && r.Dropped == 0 && r.FetchFailed == 0
}

func (o Options) progress(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
}

// run measures one fleet of opts.N sims against a fresh distributor in dir.
// An error means the run could not be made; what broke down while it ran
// is in the result.
func (e *env) run(ctx context.Context, dir string, opts Options) (*Result, error) {
	res := &Result{N: opts.N, Chunks: e.chunks, Dir: dir}
	creds, err := e.credentials(opts.N)
	if err != nil {
		return nil, err
	}
	d, err := e.startDistributor(ctx, dir, opts.N)
	if err != nil {
		return nil, err
	}
	res.Children = d.children
	distCPU0, _ := cpuTime(d.pid())
	genCPU0 := selfCPU()
	defer func() {
		if err := d.stop(); err != nil {
			res.StopError = err.Error()
		}
	}()
	opts.progress("n=%d: distributor %s (pid %d, children %s), log %s", opts.N, d.addr, d.pid(), d.children, d.logPath)

	f := &fleet{addr: d.addr, channel: channel}
	stopSims, err := f.connectIdle(ctx, d.pid(), creds, opts, res, nil)
	defer stopSims()
	if err != nil {
		return nil, err
	}
	if heap, err := scrapeMetric(ctx, "http://"+d.statusAddr+"/metrics", "go_memstats_heap_inuse_bytes"); err == nil {
		res.IdleHeap = int64(heap)
	} else {
		f.samples.add("metrics", err)
	}
	opts.progress("n=%d: idle %v: %.2f CPU-s/min, RSS %s, heap %s", opts.N, res.IdleWindow.Round(time.Millisecond), res.IdleCPUPerMinute, mib(res.IdleRSS), mib(res.IdleHeap))

	// Publish: the peak RSS from here until every sim holds the revision.
	res.PeakFromHWM = resetPeak(d.pid())
	sampler := sampleRSS(d.pid(), opts.SampleEvery)
	f.target.Store(&e.rev)
	published := make(chan struct{})
	pubStart := time.Now()
	go func() {
		defer close(published)
		pctx, cancel := context.WithTimeout(ctx, opts.PublishTimeout)
		defer cancel()
		_, err := e.tedRun(pctx, "publish", "--store", e.store, e.rev.name, "--to", d.addr,
			"--ca", filepath.Join(e.caDir, "ca.crt"), "--cert", filepath.Join(e.caDir, pubName+".crt"), "--key", filepath.Join(e.caDir, pubName+".key"), "--json")
		res.PublishTime = time.Since(pubStart)
		if err != nil {
			if pctx.Err() != nil && ctx.Err() == nil {
				err = fmt.Errorf("timed out after %v: %w", opts.PublishTimeout, err)
			}
			res.PublishError = err.Error()
		}
	}()
	if waitCount(ctx, &f.offered, opts.N, opts.FetchTimeout) {
		res.OfferTime = lastTime(f.sims, func(s *sim) int64 { return s.offered.Load() }).Sub(pubStart)
	}
	if waitCount(ctx, &f.fetched, opts.N, max(opts.FetchTimeout-time.Since(pubStart), 0)) {
		res.FetchTime = lastTime(f.sims, func(s *sim) int64 { return s.fetched.Load() }).Sub(pubStart)
	}
	for _, s := range f.sims {
		res.ChunksHeld += s.chunks.Load()
	}
	<-published
	res.Offered, res.Fetched = int(f.offered.Load()), int(f.fetched.Load())
	res.PeakRSS = sampler.finish()
	if _, hwm, err := memStatus(d.pid()); err == nil && res.PeakFromHWM {
		res.PeakRSS = max(res.PeakRSS, hwm)
	}
	opts.progress("n=%d: publish %v (%s); offered %d in %v, fetched %d in %v, peak RSS %s", opts.N,
		res.PublishTime.Round(time.Millisecond), orOK(res.PublishError), res.Offered, res.OfferTime.Round(time.Millisecond), res.Fetched, res.FetchTime.Round(time.Millisecond), mib(res.PeakRSS))

	// The received states travel up as status reports; status shows them
	// once the distributor has read them.
	e.status(ctx, d, res, opts)

	res.DistributorCPU = cpuOr0(d.pid()) - distCPU0
	res.GeneratorCPU = selfCPU() - genCPU0
	f.stopping.Store(true)
	res.Refused, res.DialFailed, res.HelloFailed = f.refused.Load(), f.dialFailed.Load(), f.helloFailed.Load()
	res.Dropped, res.FetchFailed = f.dropped.Load(), f.fetchFailed.Load()
	res.Samples = f.samples.all()
	return res, nil
}

// connectIdle starts the fleet's sims, one per credential, against f.addr,
// waits until all are admitted, then measures the server (process pid)
// idle: its CPU over opts.Idle after opts.Settle, and its RSS at the end,
// into res. admitted, if not nil, is called once all are admitted, before
// the settling. stop ends the sims; it must be called, error or not.
func (f *fleet) connectIdle(ctx context.Context, pid int, creds []*transport.Credentials, opts Options, res *Result, admitted func()) (stop func(), err error) {
	var eps []*transport.Endpoint
	closeEndpoints := sync.OnceFunc(func() {
		f.stopping.Store(true)
		var wg sync.WaitGroup
		for _, ep := range eps {
			wg.Go(func() { _ = ep.Close() })
		}
		wg.Wait()
	})
	simCtx, stopSims := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() {
		f.stopping.Store(true)
		stopSims()
		closeEndpoints()
		wg.Wait()
	}
	perSocket := max(opts.PerSocket, 1)
	for i := range opts.N {
		if i%perSocket == 0 {
			ep, err := transport.NewEndpoint(transport.QUICConfig{})
			if err != nil {
				return stop, err
			}
			eps = append(eps, ep)
		}
		f.sims = append(f.sims, &sim{name: simName(i), cred: creds[i], ep: eps[len(eps)-1]})
	}
	res.Sockets = len(eps)

	start := time.Now()
	for _, s := range f.sims {
		wg.Go(func() { f.run(simCtx, s) })
	}
	if waitCount(ctx, &f.admitted, opts.N, opts.ConnectTimeout) {
		res.ConnectTime = lastTime(f.sims, func(s *sim) int64 { return s.admitted.Load() }).Sub(start)
	}
	res.Admitted = int(f.admitted.Load())
	opts.progress("n=%d: %d admitted in %v (refused dials %d, failed %d)", opts.N, res.Admitted, time.Since(start).Round(time.Millisecond), f.refused.Load(), f.dialFailed.Load())
	if admitted != nil {
		admitted()
	}

	// Idle: every admitted sim keeps its session, nothing is published.
	if err := sleep(ctx, opts.Settle); err != nil {
		return stop, err
	}
	cpu0, err := cpuTime(pid)
	if err != nil {
		return stop, err
	}
	t0 := time.Now()
	if err := sleep(ctx, opts.Idle); err != nil {
		return stop, err
	}
	cpu1, err := cpuTime(pid)
	if err != nil {
		return stop, err
	}
	res.IdleWindow = time.Since(t0)
	res.IdleCPUPerMinute = (cpu1 - cpu0).Seconds() / res.IdleWindow.Minutes()
	if res.IdleRSS, _, err = memStatus(pid); err != nil {
		return stop, err
	}
	return stop, nil
}

// runReference measures the same fleet against the reference server
// (reference.go): admitted, idle CPU and RSS, and from the "publish" the
// time until every sim has read payload bytes, and the server's peak RSS
// meanwhile.
func (e *env) runReference(ctx context.Context, opts Options, payload int) (*Result, error) {
	res := &Result{N: opts.N, Children: "reference"}
	creds, err := e.credentials(opts.N)
	if err != nil {
		return nil, err
	}
	r, err := e.startReference(payload)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := r.stop(); err != nil {
			res.StopError = err.Error()
		}
	}()
	serverCPU0, genCPU0 := cpuOr0(r.pid()), selfCPU()
	opts.progress("n=%d: reference: plain quic-go at %s (pid %d)", opts.N, r.addr, r.pid())
	f := &fleet{addr: r.addr, publish: make(chan struct{}), payload: payload}
	stopSims, err := f.connectIdle(ctx, r.pid(), creds, opts, res, func() { _ = r.cmd.Process.Signal(syscall.SIGUSR1) })
	defer stopSims()
	if err != nil {
		return nil, err
	}
	opts.progress("n=%d: reference: idle %v: %.2f CPU-s/min, RSS %s", opts.N, res.IdleWindow.Round(time.Millisecond), res.IdleCPUPerMinute, mib(res.IdleRSS))
	res.PeakFromHWM = resetPeak(r.pid())
	sampler := sampleRSS(r.pid(), opts.SampleEvery)
	start := time.Now()
	close(f.publish)
	if waitCount(ctx, &f.fetched, opts.N, opts.FetchTimeout) {
		res.FetchTime = lastTime(f.sims, func(s *sim) int64 { return s.fetched.Load() }).Sub(start)
	}
	res.Fetched = int(f.fetched.Load())
	res.PeakRSS = sampler.finish()
	if _, hwm, err := memStatus(r.pid()); err == nil && res.PeakFromHWM {
		res.PeakRSS = max(res.PeakRSS, hwm)
	}
	opts.progress("n=%d: reference: %d read %s in %v, peak RSS %s", opts.N, res.Fetched, humanBytes(int64(payload)), res.FetchTime.Round(time.Millisecond), mib(res.PeakRSS))
	res.DistributorCPU = cpuOr0(r.pid()) - serverCPU0
	res.GeneratorCPU = selfCPU() - genCPU0
	f.stopping.Store(true)
	res.Refused, res.DialFailed, res.Dropped, res.FetchFailed = f.refused.Load(), f.dialFailed.Load(), f.dropped.Load(), f.fetchFailed.Load()
	res.Samples = f.samples.all()
	return res, nil
}

// status times `ted distributor status --json` and counts the children it
// shows connected and holding the revision; it asks again (each ask
// timed, the last one kept) for up to 30 s until all N are shown so.
func (e *env) status(ctx context.Context, d *distributor, res *Result, opts Options) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		t := time.Now()
		out, err := e.tedRun(sctx, "distributor", "status", "--config", d.config, "--json")
		res.StatusTime = time.Since(t)
		cancel()
		if err != nil {
			res.StatusError = err.Error()
			return
		}
		var st struct {
			Children []struct {
				Connected bool `json:"connected"`
				Revisions []struct {
					Name     string `json:"name"`
					Revision uint64 `json:"revision"`
					State    string `json:"state"`
				} `json:"revisions"`
			} `json:"children"`
		}
		if err := json.Unmarshal(out, &st); err != nil {
			res.StatusError = fmt.Sprintf("decode status: %v", err)
			return
		}
		res.StatusConnected, res.StatusReceived = 0, 0
		for _, c := range st.Children {
			if c.Connected {
				res.StatusConnected++
			}
			for _, r := range c.Revisions {
				if r.Name == e.rev.name && r.Revision == e.rev.rev && r.State == "received" {
					res.StatusReceived++
				}
			}
		}
		if res.StatusReceived >= res.Fetched || time.Now().After(deadline) || ctx.Err() != nil {
			opts.progress("n=%d: status %v: %d connected, %d received", opts.N, res.StatusTime.Round(time.Millisecond), res.StatusConnected, res.StatusReceived)
			return
		}
		if sleep(ctx, time.Second) != nil {
			return
		}
	}
}

// waitCount waits until *n reaches want, for at most timeout; it reports
// whether it did.
func waitCount(ctx context.Context, n interface{ Load() int64 }, want int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for n.Load() < int64(want) {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// lastTime is the latest of the sims' times (UnixNano) that get returns.
func lastTime(sims []*sim, get func(*sim) int64) time.Time {
	var last int64
	for _, s := range sims {
		last = max(last, get(s))
	}
	return time.Unix(0, last)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// selfCPU is this process's CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func cpuOr0(pid int) time.Duration {
	d, _ := cpuTime(pid)
	return d
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

func orOK(s string) string {
	if s == "" {
		return "ok"
	}
	return s
}
