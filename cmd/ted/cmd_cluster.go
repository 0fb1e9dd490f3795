package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/spf13/cobra"

	"ted/admin"
	"ted/agent"
	"ted/distribution"
	"ted/pki"
	"ted/series"
	"ted/store"
	"ted/subscriber"
	"ted/subscriber/cluster"
	"ted/transport"
)

// runClusterSubscriber runs one node of a cluster subscriber: it gossips
// with the others, and while it holds the cluster's lease it opens the
// cluster's store and journal in shared_dir and runs the subscriber there.
// A standby has no store open and never dials the parent for content.
func runClusterSubscriber(ctx context.Context, config string, file *subscriberFile, log *slog.Logger) error {
	cl := file.Cluster
	key, err := cluster.LoadKey(cl.SecretFile)
	if err != nil {
		return usageError{fmt.Errorf("%s: cluster.%w", config, err)}
	}
	n, err := setUpNodeStore(&file.nodeFile, pki.RoleSubscriber, log, false)
	if err != nil {
		return err
	}
	cfg, err := subscriberConfig(config, file, n)
	if err != nil {
		return err
	}
	// Only the first parent grants the lease, and only it serves content
	// to a cluster node (subscriber/cluster).
	cfg.Parents.Addrs = file.Parents[:1]
	cfg.Cluster, cfg.Node, cfg.Instance = cl.Name, cl.Node, cluster.NewInstance()
	log = log.With("cluster", cl.Name, "cluster_node", cl.Node)
	ctx, restart := context.WithCancelCause(ctx)
	defer restart(nil)
	var ca *clusterAgent
	if file.Agent != nil {
		u := &upgrader{dir: agentDir(file.DataDir), file: file.Agent, kind: "subscriber", config: config, version: cfg.Agent,
			schedules: cfg.Schedules, restart: restart, log: log}
		defer u.stop()
		cfg.Channels = file.channelsWithAgent()
		ca = &clusterAgent{u: u, packDir: packDir(cl.SharedDir), trust: cfg.Trust, node: cl.Node, peers: len(cl.Join) > 0, log: log,
			allowed: map[string]time.Time{}}
	}

	gossip, err := cluster.StartGossip(cluster.GossipConfig{Cluster: cl.Name, Node: cl.Node, Bind: cl.Bind, Join: cl.Join, Key: key, Log: log})
	if err != nil {
		// The gossip binds TCP and UDP on the one port.
		return bindError(config, "cluster.bind", cl.Bind, "", err)
	}
	defer func() {
		if err := gossip.Leave(); err != nil {
			log.Warn("leaving the cluster", "err", err)
		}
	}()
	leases := cluster.NewLeaseClient(file.Parents[0], n.dial, transport.Hello{Name: file.Name, Agent: cfg.Agent,
		Channels: file.channelsWithAgent(), Cluster: cl.Name, Node: cl.Node, Instance: cfg.Instance})
	defer leases.Close()
	if n.cred != nil {
		// A parent revoked since the lease session began is not asked again.
		leases.CheckPeer(n.cred.CheckRevoked)
	}
	ncfg := cluster.DefaultConfig(cl.Node)
	ncfg.Priority, ncfg.Log, ncfg.Authority = cl.Priority, log, file.Parents[0]
	ncfg.Agent = func() (string, bool, string) {
		if ca == nil {
			return cfg.Agent, false, ""
		}
		failed, _ := ca.failed.Load().(string)
		return cfg.Agent, ca.probation.Load(), failed
	}
	// Test-only switches, to show what the fencing prevents: no lease
	// checks at all, and a store lock that does not hold across processes
	// (shared storage whose locks are not coherent across hosts).
	noFence, noLock := os.Getenv("TED_TEST_NO_FENCE") == "1", os.Getenv("TED_TEST_NO_STORE_LOCK") == "1"
	if noFence || noLock {
		log.Warn("test switches set: this node is not safe to run", "TED_TEST_NO_FENCE", noFence, "TED_TEST_NO_STORE_LOCK", noLock)
	}
	ncfg.NoFence = noFence
	ncfg.Health = func() error {
		if err := gossip.Problem(); err != nil {
			return err
		}
		info, err := os.Stat(cl.SharedDir)
		if err != nil {
			return fmt.Errorf("shared_dir: %w", err)
		}
		if !info.IsDir() {
			return fmt.Errorf("shared_dir %s: not a directory", cl.SharedDir)
		}
		return nil
	}
	node := cluster.NewNode(ncfg, gossip, leases)
	host, _ := os.Hostname()

	var (
		mu     sync.Mutex
		cur    *subscriber.Subscriber
		curCtx context.Context
		// curShow shows again what became of the newest build of ted in
		// cur's store (agent_cluster.go).
		curShow func()
		// calls are the operator's commands running on cur: act waits
		// for them before it closes the store.
		calls sync.WaitGroup
		// actErr is why act last failed, if it did; stuck says since when
		// this node holds the lease without acting (health).
		actErr error
		actAt  time.Time
		stuck  time.Time
	)
	active := func() (*subscriber.Subscriber, error) {
		mu.Lock()
		defer mu.Unlock()
		if cur == nil {
			_, activeNode, _ := node.Status()
			if activeNode == "" {
				activeNode = "none yet"
			}
			return nil, fmt.Errorf("%w (%s); the active node is %s", cluster.ErrStandby, cl.Node, activeNode)
		}
		return cur, nil
	}
	// An operator's command runs only while this node acts, and stops
	// with it: never past the lease.
	on := func(ctx context.Context, fn func(context.Context, *subscriber.Subscriber) error) error {
		mu.Lock()
		s, actCtx := cur, curCtx
		if s != nil {
			calls.Add(1)
		}
		mu.Unlock()
		if s == nil {
			_, err := active()
			return err
		}
		defer calls.Done()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(actCtx, cancel)()
		return fn(ctx, s)
	}
	// A node that fences itself off starts again unless the daemon itself
	// is stopping: that is the daemon's context (set below, before the
	// node runs), not act's, which the watchdog ends with the lease.
	daemonCtx := ctx
	act := func(ctx context.Context, epoch uint64) (err error) {
		valid := func() bool { return node.LeaseValid(epoch) }
		fence, err := cluster.Claim(cl.SharedDir, cluster.Holder{Epoch: epoch, Node: cl.Node, Instance: cfg.Instance,
			Host: host, PID: os.Getpid(), Since: time.Now().UTC()}, valid, func(err error) { selfFence(daemonCtx, log, err) })
		if err != nil {
			return err
		}
		check := func() error {
			err := fence.Check()
			if err != nil {
				// Whatever was under way is in an unknown state: stop,
				// and start again from the journal if the lease holds.
				node.Interrupt(epoch)
			}
			return err
		}
		if noFence {
			check = func() error { return nil }
		} else {
			// Checked also when nothing is written: the store's own
			// background work (compactions) writes too, so a node that
			// resumes after a pause finds another epoch within 100 ms.
			pollCtx, stopPoll := context.WithCancel(ctx)
			polled := make(chan struct{})
			go func() {
				defer close(polled)
				pollFence(pollCtx, check)
			}()
			defer func() { stopPoll(); <-polled }()
		}
		st, err := openShared(ctx, filepath.Join(cl.SharedDir, "store"), check, fence.Previous(), noLock, log, func(waiting string) {
			node.SetReady(epoch, false, waiting)
		})
		if err != nil {
			return err
		}
		fenced := store.Fenced(st, check)
		defer func() {
			// Closing writes (the store flushes): only while the lease
			// holds. Past it, the files stay as a crash leaves them.
			if cerr := fenced.Close(); errors.Is(cerr, store.ErrFenced) {
				selfFence(daemonCtx, log, cerr)
			} else if err == nil {
				err = cerr
			}
		}()
		c := cfg
		c.Epoch, c.Fence = epoch, check
		var s *subscriber.Subscriber
		var reconsider func(*distribution.Manifest)
		if ca != nil {
			// Builds of ted: laid out in shared_dir for every node, and
			// this node upgrades after the standbys (agent_cluster.go).
			offer := func(ctx context.Context, m *distribution.Manifest, parentAgent string) (string, string) {
				return ca.activeOffer(ctx, fenced, check, m, parentAgent, func() { reconsider(m) })
			}
			c.OnAgent = offer
			reconsider = func(m *distribution.Manifest) {
				_ = on(daemonCtx, func(ctx context.Context, now *subscriber.Subscriber) error {
					if now != s {
						return nil // acting again since: that act shows its own
					}
					state, reason := offer(ctx, m, s.ParentAgent())
					s.SetAgentState(m, state, reason)
					return nil
				})
			}
		}
		s, err = newSubscriber(c, file, fenced, filepath.Join(cl.SharedDir, "installed"), log)
		if err != nil {
			return err
		}
		mu.Lock()
		cur, curCtx = s, ctx
		mu.Unlock()
		defer func() {
			mu.Lock()
			cur, curCtx = nil, nil
			mu.Unlock()
			calls.Wait() // then the store closes
		}()
		node.SetReady(epoch, true, "")
		log.Info("cluster node active: receiving and extracting", "epoch", epoch, "shared_dir", cl.SharedDir)
		mu.Lock()
		actErr = nil
		mu.Unlock()
		if ca != nil {
			// Through on: never past the act, whose store closes.
			show := func() {
				_ = on(ctx, func(ctx context.Context, now *subscriber.Subscriber) error {
					if now == s {
						ca.showStored(ctx, fenced, check, s, reconsider)
					}
					return nil
				})
			}
			mu.Lock()
			curShow = show
			mu.Unlock()
			defer func() {
				mu.Lock()
				curShow = nil
				mu.Unlock()
			}()
			go show()
		}
		err = s.Run(ctx, n.dial)
		log.Info("cluster node no longer active", "epoch", epoch)
		return err
	}
	status := func() any {
		role, activeNode, problem := node.Status()
		if role == cluster.RoleActive {
			if s, err := active(); err == nil {
				st := s.Status()
				st.Problem = problem
				return st
			}
		}
		return subscriber.Status{Node: cl.Node, Role: string(cluster.RoleStandby), ActiveNode: activeNode, Problem: problem, Agent: cfg.Agent,
			Distributions: []subscriber.DistributionStatus{}}
	}
	actions := subscriberActions(on)
	actions["handover"] = func(_ context.Context, params url.Values) (any, error) {
		to := params.Get("to")
		if to == "" {
			return nil, fmt.Errorf("handover: --to is required: %w", admin.ErrInvalid)
		}
		if err := node.Handover(to); err != nil {
			return nil, fmt.Errorf("%w: %w", err, admin.ErrInvalid)
		}
		return status(), nil
	}
	log.Info("subscriber running", "node", file.Name, "cluster", cl.Name, "cluster_node", cl.Node, "priority", cl.Priority,
		"parent", file.Parents[0], "shared_dir", cl.SharedDir, "root", file.Root, "data_dir", file.DataDir)
	// While standby, /metrics has the process's series and the
	// certificate's; while active, the subscriber's (which has those too).
	standby := prometheus.NewRegistry()
	standby.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		series.CertificateExpiry(func() time.Time { return n.cred.Self().NotAfter }))
	if ca != nil {
		ca.members, ca.handover = gossip.Members, node.Handover
		if st, err := ca.u.dir.Load(); err == nil && st.Probation != nil && st.Probation.Version == cfg.Agent {
			ca.probation.Store(true)
		}
		go ca.watch(ctx, func() bool {
			// Still acting while it stands down: the store is open.
			acting, _ := node.Acting()
			mu.Lock()
			defer mu.Unlock()
			return acting || cur != nil
		}, func() {
			mu.Lock()
			show := curShow
			mu.Unlock()
			if show != nil {
				show()
			}
		})
		go func() {
			// On probation: committed once the node has been healthy for a
			// while (agent.MinHealthy); then, if it acts, what it shows of
			// the build is said again.
			err := agent.Probate(ctx, ca.u.dir, ca.u.version, func() error { return clusterAgentHealthy(gossip, node, active) }, log)
			if err != nil {
				log.Error("agent: probation", "err", err)
				return
			}
			if ctx.Err() == nil && ca.probation.Swap(false) {
				mu.Lock()
				reshow := curShow
				mu.Unlock()
				if reshow != nil {
					reshow()
				}
			}
		}()
	}
	err = n.serve(ctx, "subscriber", daemonAdmin{
		status: status,
		health: func() error {
			return clusterHealth(cl.Node, node, active, func(acting bool, now time.Time) (time.Time, time.Time, error) {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case !acting:
					stuck = time.Time{}
				case stuck.IsZero():
					stuck = now
				}
				return stuck, actAt, actErr
			})
		},
		metrics: prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
			mu.Lock()
			s := cur
			mu.Unlock()
			if s != nil {
				return s.Registry().Gather()
			}
			return standby.Gather()
		}),
		views: subscriberViews(on), actions: actions,
	}, func(ctx context.Context) error {
		daemonCtx = ctx
		return node.Run(ctx, func(ctx context.Context, epoch uint64) error {
			err := act(ctx, epoch)
			if err != nil && ctx.Err() == nil {
				mu.Lock()
				actErr, actAt = err, time.Now()
				mu.Unlock()
			}
			return err
		})
	})
	if errors.Is(context.Cause(ctx), agent.ErrRestart) {
		return agent.ErrRestart // main relaunches, once everything is closed
	}
	return err
}

// clusterAgentHealthy is a cluster node's health for its agent's
// probation: the gossip works and elected a node, and the active node
// receives (its subscriber is healthy and connected to the parent).
func clusterAgentHealthy(gossip *cluster.Gossip, node *cluster.Node, active func() (*subscriber.Subscriber, error)) error {
	if err := gossip.Problem(); err != nil {
		return err
	}
	if s, err := active(); err == nil {
		if err := s.Health(); err != nil {
			return err
		}
		if s.ParentAgent() == "" {
			return errors.New("no parent connected yet")
		}
		return nil
	}
	role, activeNode, problem := node.Status()
	switch {
	case problem != "":
		return errors.New(problem)
	case role != cluster.RoleStandby || activeNode == "":
		return errors.New("no cluster node is active yet")
	}
	return nil
}

// clusterActGrace is how long a cluster node may hold the lease without
// acting (opening the shared store, waiting for the lock the node active
// before holds) before its health check fails.
const clusterActGrace = time.Minute

// clusterActFailureShown is how long a standby whose last attempt to act
// failed reports it: if every node fails to act (the shared store does not
// open anywhere), the nodes take turns failing and each is standby most of
// the time, and a standby that said it was healthy would hide it.
const clusterActFailureShown = 10 * time.Minute

// clusterHealth is a cluster node's health: a standby is healthy unless
// it failed to act when it last held the lease, within
// clusterActFailureShown; the active node is healthy while its subscriber
// is (Subscriber.Health) and the election reports no problem with it (its
// shared_dir, the gossip); a node that holds the lease but has not been
// able to act for clusterActGrace is not. stuck records whether it holds
// the lease without acting, and returns since when, why it last failed to
// act and when.
func clusterHealth(name string, node *cluster.Node, active func() (*subscriber.Subscriber, error),
	stuck func(acting bool, now time.Time) (time.Time, time.Time, error)) error {
	role, _, problem := node.Status()
	if s, err := active(); err == nil {
		stuck(false, time.Now())
		if err := s.Health(); err != nil {
			return err
		}
		if role == cluster.RoleActive && problem != "" {
			return fmt.Errorf("active cluster node %s cannot go on: %s", name, problem)
		}
		return nil
	}
	acting, _ := node.Acting()
	since, actAt, actErr := stuck(acting, time.Now())
	if !acting && actErr != nil && time.Since(actAt) < clusterActFailureShown {
		return fmt.Errorf("cluster node %s could not act when it last held the lease (%s ago): %v", name, time.Since(actAt).Round(time.Second), actErr)
	}
	if !acting || time.Since(since) < clusterActGrace {
		return nil // a standby, or a node still starting to act
	}
	if actErr != nil {
		problem = fmt.Sprintf("%s; last failure: %v", problem, actErr)
	}
	return fmt.Errorf("cluster node %s %s (for %s)", name, problem, time.Since(since).Round(time.Second))
}

// openShared opens the cluster's store, waiting while the node that was
// active before still holds its lock: it stops at its next change to the
// shared directory (its epoch is no longer the one on disk), or as its
// lease ends by its own clock. A process that never does (hung, or frozen
// with its machine) holds the lock until it is stopped: TED never takes a
// lock from a live process, which may still write. While it waits, waiting
// says so, naming that process (status shows it).
func openShared(ctx context.Context, dir string, check func() error, prev *cluster.Holder, noLock bool, log *slog.Logger, waiting func(string)) (*store.Badger, error) {
	start := time.Now()
	lastLog := start
	for delay := 50 * time.Millisecond; ; delay = min(delay*2, time.Second) {
		if err := check(); err != nil {
			return nil, err
		}
		st, err := store.Open(dir, store.Options{Create: true, Logger: log, NoLock: noLock})
		if err == nil {
			return st, nil
		}
		if !errors.Is(err, store.ErrLocked) {
			return nil, fmt.Errorf("shared_dir: %w", err)
		}
		who := "a process of the node active before"
		if prev != nil {
			who = prev.String()
		}
		msg := fmt.Sprintf("waiting %s for the store lock in %s, held by %s: it stops by itself at its next write or "+
			"when its lease ends; if it is hung, stop it (kill -9, or power its machine off)", time.Since(start).Round(time.Second), dir, who)
		waiting(msg)
		if time.Since(lastLog) >= 10*time.Second {
			log.Error("cluster: " + msg)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// selfFence stops this process at once, writing nothing more: another node
// writes the shared directory now, or this node's lease ended while it
// still had its store open. Closing the store would write (badger flushes
// its memtable), so the process starts itself again instead (exec), which
// drops every file it has open exactly as a crash would; it comes back as
// a standby. Commands it started (pre- and post-actions) run in process
// groups of their own that exec would leave running: they are killed
// first. The next holder recovers the store and the journal as after a
// crash. While the daemon is stopping (ctx ended) it exits instead.
func selfFence(ctx context.Context, log *slog.Logger, cause error) {
	log.Error("cluster: fenced off; this process starts again as a standby, writing nothing more", "err", cause)
	killChildGroups(log)
	if ctx.Err() != nil {
		os.Exit(exitFenced)
	}
	err := agent.ExecSelf(os.Args)
	// Exec failed: exit instead; a supervisor (systemd) starts it again.
	log.Error("cluster: cannot start again; exiting", "err", err)
	os.Exit(exitFenced)
}

// killChildGroups kills the process group of every child of this process
// (an action runs as `sh -c` in a group of its own, so what it started
// goes too).
func killChildGroups(log *slog.Logger) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces, so read
		// after its closing parenthesis.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) < 3 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		pgrp, _ := strconv.Atoi(fields[2])
		if ppid != self {
			continue
		}
		target := pid
		if pgrp == pid {
			target = -pgrp // its own group: the whole group
		}
		if err := syscall.Kill(target, syscall.SIGKILL); err == nil {
			log.Warn("cluster: fenced off; killed a command still running", "pid", pid)
		}
	}
}

// pollFence checks the fence every 100 ms until ctx ends: a refused check
// interrupts the node's work, and another epoch on disk fences it off.
func pollFence(ctx context.Context, check func() error) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = check()
		}
	}
}

// exitFenced is the exit status of a node that fenced itself off and could
// not start itself again.
const exitFenced = 75

func newSubscriberClusterCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Operate a cluster subscriber's nodes"}
	var config, to string
	handover := &cobra.Command{
		Use:   "handover --config subscriber.yaml --to NODE",
		Short: "Make NODE the active node (it takes over once the active one has stopped)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, f := range [][2]string{{"config", config}, {"to", to}} {
				if err := requireFlag(f[0], f[1]); err != nil {
					return err
				}
			}
			file, err := loadSubscriberConfig(config)
			if err != nil {
				return err
			}
			if file.Cluster == nil {
				return usageError{fmt.Errorf("%s: no cluster block: not a cluster node", config)}
			}
			var st subscriber.Status
			if err := admin.Post(cmd.Context(), daemonSocket(file.DataDir), "handover", url.Values{"to": {to}}, &st); err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), g.json, st, func(p *printer) {
				p.linef("handover to %s asked; %s is %s, the active node is %s", to, st.Node, st.Role, st.ActiveNode)
			})
		},
	}
	handover.Flags().StringVar(&config, "config", "", "the config file of any node of the cluster")
	handover.Flags().StringVar(&to, "to", "", "the node to make active")
	addJSONFlag(handover, g)
	cmd.AddCommand(handover)
	return cmd
}
