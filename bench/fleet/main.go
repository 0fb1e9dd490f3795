// Command fleet simulates N subscribers in one process against one real
// `ted distributor run`, to measure how a distributor scales with the
// number of sessions (bench/README.md, "Fleet").
//
// Each simulated subscriber is a real QUIC + mutual TLS session with a
// certificate of its own (signed in memory by the run's CA), many sharing
// one UDP socket (transport.Endpoint). Like a subscriber's daemon it says
// hello for the channel, reports its status, reads offers, fetches the
// offered revision's chunks on 2 streams (each checked against its id,
// then dropped) and reports the revision received. The distributor is the
// real binary; the revision, 1 MiB of random bytes by default, is built
// and published with the real CLI (`ted dist build`, `ted publish`).
//
// For each N, against a fresh distributor: the time until all N are
// admitted; after -settle, the distributor's CPU-seconds per minute over
// -idle and its RSS and Go heap in use at its end; then, from the start of
// `ted publish`, the time until the offer reached all N and until all N
// held every chunk, the distributor's peak RSS meanwhile, the time of
// `ted publish`; and the time of `ted distributor status --json`. Refused
// and failed dials, failed hellos and fetches and dropped sessions are
// counted and reported. Nothing waits forever: a run that breaks down
// ends at its timeouts and reports how far it got.
//
//	go run ./bench/fleet -n 1000,3000,10000 [-idle 60s] [-json out.json]
//
// bench/fleet.sh builds ted and runs the sizes.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "rollup" {
		if err := runRollup(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "fleet rollup:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "reference-server" {
		if err := runReferenceServer(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "fleet reference-server:", err)
			os.Exit(1)
		}
		return
	}
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	opts := DefaultOptions()
	var (
		sizes   = flag.String("n", "1000,3000,10000", "numbers of simulated subscribers, comma-separated; one run each, one after the other")
		ted     = flag.String("ted", "", "the ted binary (default: built from this module into the work directory)")
		work    = flag.String("dir", "", "work directory (default: a new temporary one, removed at the end unless -keep)")
		keep    = flag.Bool("keep", false, "keep the work directory (configs, the distributor's logs)")
		payload = flag.Int("payload", 1<<20, "bytes of the revision published")
		jsonOut = flag.String("json", "", "also write the results as JSON to this file")
		ref     = flag.Bool("reference", true, "also run each N against plain quic-go (the reference: same sims, same TLS and QUIC settings, no TED) and report TED's figures as ratios to it")
	)
	flag.IntVar(&opts.PerSocket, "per-socket", opts.PerSocket, "sessions per UDP socket")
	flag.DurationVar(&opts.ConnectTimeout, "connect-timeout", opts.ConnectTimeout, "wait at most this long for all N to be admitted")
	flag.DurationVar(&opts.Settle, "settle", opts.Settle, "wait after all are admitted, before the idle window")
	flag.DurationVar(&opts.Idle, "idle", opts.Idle, "idle window over which the distributor's CPU is measured")
	flag.DurationVar(&opts.PublishTimeout, "publish-timeout", opts.PublishTimeout, "stop `ted publish` after this long")
	flag.DurationVar(&opts.FetchTimeout, "fetch-timeout", opts.FetchTimeout, "wait at most this long, from the publish's start, for all N to hold the revision")
	flag.Parse()
	ns, err := parseSizes(*sizes)
	if err != nil {
		return err
	}
	opts.Progress = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	raiseFileLimit(os.Stderr)
	warnUDPBuffers(os.Stderr)

	dir := *work
	if dir == "" {
		if dir, err = os.MkdirTemp("", "fleet-"); err != nil {
			return err
		}
		if !*keep {
			defer os.RemoveAll(dir)
		}
	}
	if *ted == "" {
		*ted = filepath.Join(dir, "ted")
		fmt.Fprintf(os.Stderr, "building ted into %s\n", *ted)
		if err := buildTed(ctx, *ted); err != nil {
			return err
		}
	}
	e, err := newEnv(ctx, *ted, dir, *payload)
	if err != nil {
		return err
	}
	var results []*Result
	for _, n := range ns {
		o := opts
		o.N = n
		res, err := e.run(ctx, filepath.Join(dir, fmt.Sprintf("n%d", n)), o)
		if err != nil {
			return fmt.Errorf("n=%d: %w", n, err)
		}
		if *ref {
			if res.Reference, err = e.runReference(ctx, o, *payload); err != nil {
				return fmt.Errorf("n=%d: reference: %w", n, err)
			}
		}
		results = append(results, res)
	}
	fmt.Printf("fleet: %s of %d chunks published to one distributor; %d sessions per UDP socket; idle window %v\n\n",
		humanBytes(int64(*payload)), e.chunks, opts.PerSocket, opts.Idle)
	printTable(os.Stdout, results)
	if *jsonOut != "" {
		data, err := json.MarshalIndent(results, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func parseSizes(s string) ([]int, error) {
	var ns []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-n %q: want positive numbers separated by commas", s)
		}
		ns = append(ns, n)
	}
	return ns, nil
}

// buildTed builds the ted command of this module.
func buildTed(ctx context.Context, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "ted/cmd/ted")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ted/cmd/ted (run from inside the module): %w", err)
	}
	return nil
}

// raiseFileLimit raises the soft limit on open files to the hard one:
// the generator needs a socket per PerSocket sessions, the distributor
// (which inherits it) a file per pack and table.
func raiseFileLimit(w io.Writer) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			fmt.Fprintf(w, "warning: cannot raise the open-file limit to %d: %v\n", lim.Max, err)
		}
	}
}

// udpBufferWant is what quic-go asks for each socket (transport's
// udpBufferSize).
const udpBufferWant = 7 << 20

// warnUDPBuffers says so when the kernel caps UDP socket buffers below
// what QUIC asks for: with thousands of handshakes at once, a small
// receive buffer drops packets at the distributor.
func warnUDPBuffers(w io.Writer) {
	for _, name := range []string{"rmem_max", "wmem_max"} {
		data, err := os.ReadFile("/proc/sys/net/core/" + name)
		if err != nil {
			continue
		}
		if v, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && v < udpBufferWant {
			fmt.Fprintf(w, "warning: net.core.%s is %d, below the %d QUIC asks for; as root: sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000\n", name, v, udpBufferWant)
		}
	}
}

// printTable prints the results with one column per N.
func printTable(w io.Writer, results []*Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(label string, cell func(r *Result) string) {
		// Padded, so that right-aligning the column aligns it left.
		fmt.Fprintf(tw, "%-32s\t", label)
		for _, r := range results {
			fmt.Fprint(tw, cell(r)+"\t")
		}
		fmt.Fprintln(tw)
	}
	row("N", func(r *Result) string { return strconv.Itoa(r.N) })
	row("children named by", func(r *Result) string { return r.Children })
	row("all admitted", func(r *Result) string { return within(r.ConnectTime, r.Admitted, r.N) })
	row("RSS idle-connected", func(r *Result) string { return mib(r.IdleRSS) })
	row("Go heap in use, idle", func(r *Result) string { return mib(r.IdleHeap) })
	row("idle CPU-s per minute", func(r *Result) string { return fmt.Sprintf("%.2f", r.IdleCPUPerMinute) })
	row("offer reached all", func(r *Result) string { return within(r.OfferTime, r.Offered, r.N) })
	row("all held every chunk", func(r *Result) string { return within(r.FetchTime, r.Fetched, r.N) })
	row("chunks held / all", func(r *Result) string {
		return fmt.Sprintf("%d / %d", r.ChunksHeld, int64(r.Chunks)*int64(r.N))
	})
	row("peak RSS during publish", func(r *Result) string { return mib(r.PeakRSS) })
	row("ted publish", func(r *Result) string {
		if r.PublishError != "" {
			return "failed after " + seconds(r.PublishTime)
		}
		return seconds(r.PublishTime)
	})
	row("ted distributor status --json", func(r *Result) string {
		if r.StatusError != "" {
			return "failed"
		}
		return seconds(r.StatusTime)
	})
	row("status: connected / received", func(r *Result) string {
		return fmt.Sprintf("%d / %d", r.StatusConnected, r.StatusReceived)
	})
	row("refused dials", func(r *Result) string { return strconv.FormatInt(r.Refused, 10) })
	row("other failed dials", func(r *Result) string { return strconv.FormatInt(r.DialFailed, 10) })
	row("failed hellos", func(r *Result) string { return strconv.FormatInt(r.HelloFailed, 10) })
	row("dropped sessions", func(r *Result) string { return strconv.FormatInt(r.Dropped, 10) })
	row("failed fetches (retried)", func(r *Result) string { return strconv.FormatInt(r.FetchFailed, 10) })
	row("CPU-s distributor / generator", func(r *Result) string {
		return fmt.Sprintf("%.1f / %.1f", r.DistributorCPU.Seconds(), r.GeneratorCPU.Seconds())
	})
	if slices.ContainsFunc(results, func(r *Result) bool { return r.Reference != nil }) {
		ref := func(cell func(r, q *Result) string) func(r *Result) string {
			return func(r *Result) string {
				if r.Reference == nil {
					return "-"
				}
				return cell(r, r.Reference)
			}
		}
		ratio := func(a, b float64) string {
			if b <= 0 || a <= 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f", a/b)
		}
		row("plain quic-go: all admitted", ref(func(_, q *Result) string { return within(q.ConnectTime, q.Admitted, q.N) }))
		row("plain quic-go: RSS idle", ref(func(_, q *Result) string { return mib(q.IdleRSS) }))
		row("plain quic-go: idle CPU-s/min", ref(func(_, q *Result) string { return fmt.Sprintf("%.2f", q.IdleCPUPerMinute) }))
		row("plain quic-go: all read payload", ref(func(_, q *Result) string { return within(q.FetchTime, q.Fetched, q.N) }))
		row("plain quic-go: peak RSS", ref(func(_, q *Result) string { return mib(q.PeakRSS) }))
		row("plain quic-go: failed dials", ref(func(_, q *Result) string { return strconv.FormatInt(q.Refused+q.DialFailed, 10) }))
		row("TED / quic-go: RSS idle", ref(func(r, q *Result) string { return ratio(float64(r.IdleRSS), float64(q.IdleRSS)) }))
		row("  TED beyond quic-go, per session", ref(func(r, q *Result) string {
			return fmt.Sprintf("%.1f KiB", float64(r.IdleRSS-q.IdleRSS)/float64(r.N)/1024)
		}))
		row("TED / quic-go: idle CPU", ref(func(r, q *Result) string { return ratio(r.IdleCPUPerMinute, q.IdleCPUPerMinute) }))
		row("TED / quic-go: all held", ref(func(r, q *Result) string {
			if r.Fetched < r.N || q.Fetched < q.N {
				return "-"
			}
			return ratio(r.FetchTime.Seconds(), q.FetchTime.Seconds())
		}))
		row("TED / quic-go: peak RSS", ref(func(r, q *Result) string { return ratio(float64(r.PeakRSS), float64(q.PeakRSS)) }))
	}
	_ = tw.Flush()
	for _, r := range results {
		for kind, msgs := range r.Samples {
			for _, m := range msgs {
				fmt.Fprintf(w, "n=%d %s: %s\n", r.N, kind, m)
			}
		}
		if r.PublishError != "" {
			fmt.Fprintf(w, "n=%d publish: %s\n", r.N, r.PublishError)
		}
		if r.StatusError != "" {
			fmt.Fprintf(w, "n=%d status: %s\n", r.N, r.StatusError)
		}
		if r.StopError != "" {
			fmt.Fprintf(w, "n=%d distributor: %s\n", r.N, r.StopError)
		}
		if q := r.Reference; q != nil {
			for kind, msgs := range q.Samples {
				for _, m := range msgs {
					fmt.Fprintf(w, "n=%d reference %s: %s\n", r.N, kind, m)
				}
			}
			if q.StopError != "" {
				fmt.Fprintf(w, "n=%d reference server: %s\n", r.N, q.StopError)
			}
		}
	}
}

// within is a duration, or how many of n got there if not all did.
func within(d time.Duration, got, n int) string {
	if got < n {
		return fmt.Sprintf("never (%d of %d)", got, n)
	}
	return seconds(d)
}

func seconds(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func humanBytes(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
