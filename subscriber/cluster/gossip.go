package cluster

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// GossipConfig is a node's place in the cluster's gossip.
type GossipConfig struct {
	// Cluster names the cluster: gossip of another cluster is refused.
	Cluster string
	// Node is this node's name, unique in the cluster.
	Node string
	// Bind is the address (host:port, UDP and TCP) gossip listens on.
	Bind string
	// Join lists other nodes' gossip addresses.
	Join []string
	// Key encrypts the gossip (16, 24 or 32 bytes).
	Key []byte
	Log *slog.Logger
}

// LoadKey reads a cluster key file: 16, 24 or 32 random bytes in base64
// (`openssl rand -base64 32`).
func LoadKey(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("secret_file: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("secret_file %s: not base64: %v", file, err)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("secret_file %s: a key of %d bytes, want 16, 24 or 32 (openssl rand -base64 32)", file, len(key))
}

// Gossip is the cluster's memberlist as one node sees it: a Membership.
type Gossip struct {
	ml  *memberlist.Memberlist
	cfg GossipConfig
	log *slog.Logger

	mu   sync.Mutex
	meta []byte
	// view is the live members and their meta, copied in memberlist's
	// event callbacks: the only place its nodes may be read (the nodes
	// Members() returns are rewritten in place: hashicorp/memberlist#306).
	view     map[string]Meta
	changed  chan struct{}
	conflict string // another node uses our name
	done     chan struct{}
}

// maxMeta bounds a node's gossiped meta (memberlist's limit is 512).
const maxMeta = 512

// StartGossip starts gossiping and keeps trying to join the others in the
// background until one answers.
func StartGossip(cfg GossipConfig) (*Gossip, error) {
	host, portText, err := net.SplitHostPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("bind %q: %w", cfg.Bind, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("bind %q: port: %w", cfg.Bind, err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	g := &Gossip{cfg: cfg, log: cfg.Log,
		changed: make(chan struct{}), done: make(chan struct{}), meta: []byte("{}"), view: map[string]Meta{}}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Node
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = host, port
	mc.SecretKey = cfg.Key
	mc.Label = "ted/" + cfg.Cluster
	mc.Delegate, mc.Events, mc.Conflict = g, g, g
	mc.Logger = log.New(slogWriter{g.log}, "", 0)
	// Failure detection: a dead node is declared in about 5 s.
	mc.ProbeInterval = time.Second
	mc.ProbeTimeout = 500 * time.Millisecond
	mc.GossipInterval = 100 * time.Millisecond
	mc.SuspicionMult = 3
	// memberlist starts a suspicion at SuspicionMaxTimeoutMult times its
	// timeout and shortens it only as other members confirm it. With one
	// peer left (the second failure in a row in a 3-node cluster, the
	// dead node still counted) nobody can confirm: 6× is 18 s, over the
	// failover budget on its own. A cluster is a handful of nodes on one
	// network; the plain 3 s is enough.
	mc.SuspicionMaxTimeoutMult = 1
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: gossip on %s: %w", cfg.Cluster, cfg.Bind, err)
	}
	g.ml = ml
	go g.joinLoop()
	return g, nil
}

// joinLoop joins the configured peers, and joins them again whenever fewer
// members are alive than configured: they may start later, and memberlist
// stops probing a node it has declared dead (after GossipToTheDeadTime,
// 30 s), so the two sides of a partition that lasted longer never find
// each other again by themselves.
func (g *Gossip) joinLoop() {
	if len(g.cfg.Join) == 0 {
		return
	}
	for delay := 500 * time.Millisecond; ; {
		if g.ml.NumMembers() < len(g.cfg.Join)+1 {
			if _, err := g.ml.Join(g.cfg.Join); err != nil {
				g.log.Debug("gossip: joining the cluster", "peers", g.cfg.Join, "err", err)
				delay = min(delay*2, 5*time.Second)
			} else {
				delay = 5 * time.Second
			}
		} else {
			delay = 5 * time.Second
		}
		select {
		case <-g.done:
			return
		case <-time.After(delay):
		}
	}
}

// Members returns the live members, this node included.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := []Member{{Name: g.cfg.Node, Meta: decodeMeta(g.meta)}}
	for name, m := range g.view {
		if name != g.cfg.Node {
			out = append(out, Member{Name: name, Meta: m})
		}
	}
	if g.conflict != "" {
		// Our name is taken: never elect ourselves.
		out[0].Meta.Healthy = false
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// decodeMeta decodes gossiped meta; what does not decode is unhealthy
// (never elected).
func decodeMeta(b []byte) Meta {
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}
	}
	return m
}

// seen records a member's meta from an event callback.
func (g *Gossip) seen(n *memberlist.Node) {
	m := decodeMeta(n.Meta)
	g.mu.Lock()
	g.view[n.Name] = m
	g.mu.Unlock()
	g.notify()
}

// SetMeta gossips this node's meta.
func (g *Gossip) SetMeta(m Meta) {
	g.mu.Lock()
	if conflict := g.conflict; conflict != "" {
		m.Healthy = false
	}
	b, err := json.Marshal(m)
	if err == nil && len(b) > maxMeta && (m.AgentFailed != "" || m.Agent != "") {
		// What is only shown goes first: the election must still be
		// gossiped.
		m.AgentFailed, m.Agent = "", ""
		b, err = json.Marshal(m)
	}
	if err != nil || len(b) > maxMeta {
		g.mu.Unlock()
		g.log.Error("gossip: meta too large", "bytes", len(b))
		return
	}
	g.meta = b
	g.mu.Unlock()
	if err := g.ml.UpdateNode(2 * time.Second); err != nil {
		g.log.Debug("gossip: update", "err", err)
	}
	g.notify()
}

// Changed is closed when the members or their meta change.
func (g *Gossip) Changed() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changed
}

// Problem says why this node may not be elected, or "".
func (g *Gossip) Problem() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conflict != "" {
		return errors.New(g.conflict)
	}
	return nil
}

// Leave tells the others this node goes, and stops gossiping.
func (g *Gossip) Leave() error {
	close(g.done)
	err := g.ml.Leave(2 * time.Second)
	if serr := g.ml.Shutdown(); err == nil {
		err = serr
	}
	return err
}

func (g *Gossip) notify() {
	g.mu.Lock()
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
}

// memberlist.Delegate

// NodeMeta returns this node's meta.
func (g *Gossip) NodeMeta(limit int) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.meta) > limit {
		return []byte("{}")
	}
	return append([]byte(nil), g.meta...)
}

// NotifyMsg ignores user messages: everything travels in meta.
func (g *Gossip) NotifyMsg([]byte) {}

// GetBroadcasts has nothing to broadcast.
func (g *Gossip) GetBroadcasts(int, int) [][]byte { return nil }

// LocalState has no state beyond meta.
func (g *Gossip) LocalState(bool) []byte { return nil }

// MergeRemoteState has nothing to merge.
func (g *Gossip) MergeRemoteState([]byte, bool) {}

// memberlist.EventDelegate

// NotifyJoin wakes the election.
func (g *Gossip) NotifyJoin(n *memberlist.Node) {
	g.log.Info("gossip: member joined", "member", n.Name, "addr", n.Address())
	g.seen(n)
}

// NotifyLeave wakes the election.
func (g *Gossip) NotifyLeave(n *memberlist.Node) {
	g.log.Info("gossip: member gone", "member", n.Name)
	g.mu.Lock()
	delete(g.view, n.Name)
	g.mu.Unlock()
	g.notify()
}

// NotifyUpdate wakes the election.
func (g *Gossip) NotifyUpdate(n *memberlist.Node) { g.seen(n) }

// memberlist.ConflictDelegate

// NotifyConflict: another node has our name. Neither may be trusted to be
// who it says; this one stays standby and says why.
func (g *Gossip) NotifyConflict(existing, other *memberlist.Node) {
	if other.Name != g.cfg.Node {
		g.log.Error("gossip: two nodes claim one name; neither should be trusted until one is renamed",
			"name", other.Name, "addr", existing.Address(), "other_addr", other.Address())
		return
	}
	msg := fmt.Sprintf("another node at %s uses this node's name %q (this one is at %s): this node stays standby; give each node its own name", other.Address(), other.Name, existing.Address())
	g.mu.Lock()
	first := g.conflict == ""
	g.conflict = msg
	g.mu.Unlock()
	if first {
		g.log.Error("gossip: " + msg)
	}
	g.notify()
}

// slogWriter turns memberlist's log lines into slog records.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(line, "[ERR]"):
		w.log.Warn("gossip: " + line)
	case strings.Contains(line, "[WARN]"):
		w.log.Info("gossip: " + line)
	default:
		w.log.Debug("gossip: " + line)
	}
	return len(p), nil
}

var _ io.Writer = slogWriter{}
