package distributor

import (
	"errors"
	"fmt"
	"time"

	"ted/distribution"
	"ted/fleet"
	"ted/pki"
	"ted/schedule"
	"ted/transport"
)

// Config is a distributor's configuration.
type Config struct {
	// Name is this node's name; it must be the name in its certificate.
	Name string
	// Agent is the ted version, told to peers.
	Agent string
	// Parents, if any, are the distributors this one receives from, in
	// order of preference (a lower tier). Without parents this is a first
	// tier, fed by publishers.
	Parents transport.ParentsConfig
	// Trust holds the publisher keys whose signatures are accepted.
	Trust *distribution.Trust
	// DataDir is where the store and the cluster lease table (leases.json)
	// live; MinFreeDisk is the free space below which nothing more is
	// received there (0: no floor). Empty: the lease table is kept in
	// memory only (tests).
	DataDir     string
	MinFreeDisk int64
	// KeepRevisions is how many revisions of each distribution are kept.
	KeepRevisions int
	// Channels maps each channel to who may publish into it and who may
	// receive it.
	Channels map[string]Channel
	// Clusters maps each cluster subscriber's name to the certificates its
	// nodes may use. A node that names a cluster is served only if its
	// certificate is a member; the cluster holds one lease whichever
	// member asks.
	Clusters map[string]Cluster
	// Fetch tunes chunk transfers from publishers and parents.
	Fetch transport.FetchOptions
	// CheckpointBytes is how many bytes are received between two store
	// syncs, so a distributor killed in a transfer keeps most of it.
	CheckpointBytes int64
	// RetryMin and RetryMax bound the wait before an offer from the parent
	// that failed is tried again on the same session.
	RetryMin, RetryMax time.Duration
	// Schedules holds the schedule file (reloaded while running) that the
	// channels' Send names refer to; nil: only always and never.
	Schedules *schedule.Source
	// Clock tells the time for send windows; tests give a fake one.
	Clock schedule.Clock
	// LeaseTTL is how long a cluster subscriber's lease lasts from each
	// request (subscriber/cluster).
	LeaseTTL time.Duration
	// Revocations keeps the CA's revocation list, which the distributor
	// applies to its live sessions, passes to its children and takes
	// newer from its parent; nil: none, and lists from the parent are
	// ignored.
	Revocations *transport.RevocationKeeper
	// Self tells this node's own certificate as it is now (a renewal
	// replaces it), for status and metrics; nil: not shown.
	Self func() transport.Identity
	// Fleet tunes the view of the subtree and its reports upward.
	Fleet FleetConfig
	// OnAgent, if set, is given every agent revision (a build of ted,
	// distribution.KindAgent) stored here for this node's platform, with
	// the parent's ted version ("" at the top), in a goroutine of its
	// own: the distributor's own upgrade. It relays them to its children
	// either way.
	OnAgent func(m *distribution.Manifest, parentAgent string)
	// AgentState, if set, says what became of an agent revision for this
	// node's platform (runs here, failed, held), as its report up shows
	// it; without it such revisions show as received.
	AgentState func(name string, rev uint64, version string) (state, reason string)
}

// FleetConfig tunes what a distributor knows of its subtree (package
// fleet) and how it reports it to its parent.
type FleetConfig struct {
	// StaleAfter: a node out of touch this long is stale; ForgetAfter:
	// it is dropped from the view (its events stay in the history).
	StaleAfter  time.Duration
	ForgetAfter time.Duration
	// ReportEvery bounds how often changes are reported to the parent:
	// the changes of that long travel in one message.
	ReportEvery time.Duration
	// SummaryEvery is how often a quiet subtree sends its summary.
	SummaryEvery time.Duration
	// History, if set, keeps the events of the subtree; the distributor
	// flushes it every second. Its owner closes it.
	History *fleet.History
}

// Channel says who may publish into a channel and who may receive it.
type Channel struct {
	// Publishers are the certificates allowed to publish: by name, by
	// group (group:NAME) or by a name pattern (web-*); see matcher.
	Publishers []string
	// Children are the certificates (subscribers or lower-tier
	// distributors) allowed to receive, listed as Publishers are, or the
	// names of clusters (see Config.Clusters), whose every member
	// certificate may then receive.
	Children []string
	// Send names the schedule whose windows gate offers and chunks sent
	// to children; empty means always.
	Send string
	// Waves, if set, rolls each new revision out in waves to this
	// distributor's subscribers.
	Waves *Waves
}

// Cluster is a cluster subscriber as its parent knows it.
type Cluster struct {
	// Members are the certificate names its nodes may use, each a member
	// of this cluster only.
	Members []string
}

// DefaultConfig returns a configuration with every default spelled out.
func DefaultConfig() Config {
	return Config{
		Parents: transport.DefaultParentsConfig(),
		// Three revisions: the current one, and two to roll back to.
		KeepRevisions: 3,
		Fetch:         transport.DefaultFetchOptions(),
		// 32 MiB: a sync costs a few milliseconds, and losing 32 MiB of a
		// transfer to a kill costs less than syncing more often.
		CheckpointBytes: 32 << 20,
		RetryMin:        5 * time.Second,
		RetryMax:        5 * time.Minute,
		Clock:           schedule.SystemClock(),
		// Six seconds: a cluster node renews every two; a dead active
		// node's lease is free within six, so a standby takes over well
		// inside the 15 s failover budget.
		LeaseTTL: 6 * time.Second,
		Fleet: FleetConfig{
			StaleAfter:  fleet.DefaultStaleAfter,
			ForgetAfter: fleet.DefaultForgetAfter,
			// One second: a rollout's progress reaches the top within a
			// second or two per tier, and a burst of changes travels in
			// one message.
			ReportEvery:  time.Second,
			SummaryEvery: time.Minute,
		},
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if err := distribution.ValidName("name", c.Name); err != nil {
		errs = append(errs, err)
	}
	if c.Trust == nil || len(c.Trust.KeyIDs()) == 0 {
		errs = append(errs, errors.New("trust: no publisher key"))
	}
	if c.LeaseTTL <= 0 {
		errs = append(errs, fmt.Errorf("lease TTL %v: must be positive", c.LeaseTTL))
	}
	if c.Fleet.StaleAfter <= 0 || c.Fleet.ForgetAfter < c.Fleet.StaleAfter {
		errs = append(errs, fmt.Errorf("fleet: stale_after %v, forget_after %v: want 0 < stale_after <= forget_after", c.Fleet.StaleAfter, c.Fleet.ForgetAfter))
	}
	if c.Fleet.ReportEvery <= 0 || c.Fleet.SummaryEvery < c.Fleet.ReportEvery {
		errs = append(errs, fmt.Errorf("fleet: report every %v, summary every %v: want 0 < report <= summary", c.Fleet.ReportEvery, c.Fleet.SummaryEvery))
	}
	if c.KeepRevisions < 1 {
		errs = append(errs, fmt.Errorf("keep_revisions: %d, want at least 1", c.KeepRevisions))
	}
	if len(c.Channels) == 0 {
		errs = append(errs, errors.New("channels: none"))
	}
	for name, ch := range c.Channels {
		if err := distribution.ValidName("channel", name); err != nil {
			errs = append(errs, fmt.Errorf("channels: %w", err))
		}
		if len(c.Parents.Addrs) == 0 && len(ch.Publishers) == 0 {
			errs = append(errs, fmt.Errorf("channels.%s.publishers: none, and no parents: nothing could ever arrive", name))
		}
		if err := ValidateMembers("channels."+name+".children", ch.Children, c.Name); err != nil {
			errs = append(errs, err)
		}
		if err := ValidateMembers("channels."+name+".publishers", ch.Publishers, ""); err != nil {
			errs = append(errs, err)
		}
	}
	if err := ValidateClusters(c.Clusters); err != nil {
		errs = append(errs, err)
	}
	if c.Parents.RetryMin <= 0 || c.Parents.RetryMax < c.Parents.RetryMin || c.Parents.PreferEvery <= 0 {
		errs = append(errs, errors.New("parents: retry and prefer intervals must be positive"))
	}
	var sends []string
	for _, ch := range c.Channels {
		if ch.Send != "" {
			sends = append(sends, ch.Send)
		}
	}
	if c.Schedules == nil {
		if src, err := schedule.NewSource("", sends); err != nil {
			errs = append(errs, fmt.Errorf("channels: send: %w", err))
		} else {
			c.Schedules = src
		}
	}
	if c.Clock == nil {
		c.Clock = schedule.SystemClock()
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("retry intervals must be positive"))
	}
	if c.CheckpointBytes <= 0 {
		c.CheckpointBytes = DefaultConfig().CheckpointBytes
	}
	return errors.Join(errs...)
}

// ValidateClusters checks the clusters section: every name valid, every
// cluster with members, and every member certificate in one cluster only.
// Each problem is one error naming its field.
func ValidateClusters(clusters map[string]Cluster) error {
	var errs []error
	memberOf := map[string]string{} // certificate: its cluster
	names := sortedNames(clusters)
	for _, name := range names {
		field := "clusters." + name + ".members"
		if err := distribution.ValidName("cluster", name); err != nil {
			errs = append(errs, fmt.Errorf("clusters: %w", err))
			continue
		}
		members := clusters[name].Members
		if len(members) == 0 {
			errs = append(errs, fmt.Errorf("%s: none: list the certificate names its nodes use", field))
		}
		for _, m := range members {
			if err := pki.ValidateName(m); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", field, err))
				continue
			}
			switch other, ok := memberOf[m]; {
			case ok && other == name:
				errs = append(errs, fmt.Errorf("%s: %s is listed twice", field, m))
			case ok:
				// One node certificate in two clusters could act for
				// either: it could hold both leases, or receive for the
				// one it was not meant to serve.
				errs = append(errs, fmt.Errorf("%s: %s is also a member of cluster %s; a certificate may be a member of one cluster only, or it could act for either", field, m, other))
			default:
				memberOf[m] = name
			}
		}
	}
	for _, name := range names {
		// A name in a channel's children means the certificate and the
		// cluster of that name: they must be the same thing.
		if other, ok := memberOf[name]; ok && other != name {
			errs = append(errs, fmt.Errorf("clusters.%s: also the name of a member certificate of cluster %s; a channel's children could not tell them apart", name, other))
		}
	}
	return errors.Join(errs...)
}
