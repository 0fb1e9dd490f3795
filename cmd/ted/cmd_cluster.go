package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"ted/admin"
	"ted/pki"
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

	gossip, err := cluster.StartGossip(cluster.GossipConfig{Cluster: cl.Name, Node: cl.Node, Bind: cl.Bind, Join: cl.Join, Key: key, Log: log})
	if err != nil {
		return err
	}
	defer func() {
		if err := gossip.Leave(); err != nil {
			log.Warn("leaving the cluster", "err", err)
		}
	}()
	leases := cluster.NewLeaseClient(file.Parents[0], n.dial, transport.Hello{Name: file.Name, Agent: cfg.Agent,
		Channels: file.Channels, Cluster: cl.Name, Node: cl.Node, Instance: cfg.Instance})
	defer leases.Close()
	ncfg := cluster.DefaultConfig(cl.Node)
	ncfg.Priority, ncfg.Log = cl.Priority, log
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

	var (
		mu     sync.Mutex
		cur    *subscriber.Subscriber
		curCtx context.Context
		// calls are the operator's commands running on cur: act waits
		// for them before it closes the store.
		calls sync.WaitGroup
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
	act := func(ctx context.Context, epoch uint64) error {
		st, err := openShared(ctx, filepath.Join(cl.SharedDir, "store"), log)
		if err != nil {
			return err
		}
		defer st.Close()
		c := cfg
		c.Epoch = epoch
		s, err := newSubscriber(c, file, st, filepath.Join(cl.SharedDir, "installed"), log)
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
		log.Info("cluster node active: receiving and extracting", "epoch", epoch, "shared_dir", cl.SharedDir)
		err = s.Run(ctx, n.dial)
		log.Info("cluster node no longer active", "epoch", epoch)
		return err
	}
	status := func() any {
		if s, err := active(); err == nil {
			return s.Status()
		}
		role, activeNode, problem := node.Status()
		return subscriber.Status{Node: cl.Node, Role: string(role), ActiveNode: activeNode, Problem: problem,
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
	return n.serve(ctx, "subscriber", daemonAdmin{
		status: status,
		health: func() error {
			if s, err := active(); err == nil {
				return s.Health()
			}
			return nil // a standby is healthy
		},
		views: subscriberViews(on), actions: actions,
	}, func(ctx context.Context) error { return node.Run(ctx, act) })
}

// openShared opens the cluster's store, waiting while the node that was
// active before still holds its lock (it stops before its lease ends).
func openShared(ctx context.Context, dir string, log *slog.Logger) (*store.Badger, error) {
	for delay := 100 * time.Millisecond; ; delay = min(delay*2, time.Second) {
		st, err := store.Open(dir, store.Options{Create: true, Logger: log})
		if err == nil {
			return st, nil
		}
		if !errors.Is(err, store.ErrLocked) {
			return nil, fmt.Errorf("shared_dir: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

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
