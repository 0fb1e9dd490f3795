package subscriber

import (
	"context"
	"errors"
	"fmt"
	"time"

	"ted/distribution"
	"ted/schedule"
	"ted/transport"
)

// Config is a subscriber daemon's configuration.
type Config struct {
	// Name is this node's name; it must be the name in its certificate.
	Name string
	// Agent is the ted version, told to the parent.
	Agent string
	// Parents are the distributors to receive from, in order of preference.
	Parents transport.ParentsConfig
	// Channels are the channels subscribed to.
	Channels []string
	// Trust holds the publisher keys whose signatures are accepted: a relay
	// is trusted with nothing.
	Trust *distribution.Trust
	// Root is where every distribution's target is resolved.
	Root string
	// DataDir is where the store lives; MinFreeDisk is the free space below
	// which nothing more is received there (0: no floor).
	DataDir     string
	MinFreeDisk int64
	// KeepRevisions is how many revisions of each distribution are kept in
	// the store.
	KeepRevisions int
	// Fetch tunes chunk transfers from the parent.
	Fetch transport.FetchOptions
	// CheckpointBytes is how many bytes are received between two store
	// syncs: a subscriber killed in a transfer fetches at most this much
	// again.
	CheckpointBytes int64
	// RetryMin and RetryMax bound the wait before a failed transfer is
	// tried again on the same session.
	RetryMin, RetryMax time.Duration
	// StatusEvery bounds how often progress is reported to the parent while
	// receiving; state changes are reported at once.
	StatusEvery time.Duration
	// Schedules holds the schedule file (reloaded while running) and
	// Extract names the schedule whose windows gate extraction.
	Schedules *schedule.Source
	Extract   string
	// Clock tells the time for schedules; tests give a fake one.
	Clock schedule.Clock
	// ActionTimeout bounds each pre or post action command.
	ActionTimeout time.Duration
	// Cluster, Node and Epoch: a node of a cluster subscriber, acting
	// under the lease of that epoch (subscriber/cluster). The parent
	// refuses content without the current epoch.
	Cluster, Node, Instance string
	Epoch                   uint64
	// Fence, if set, is asked before every change to the store and under
	// the root (a cluster node: its lease still holds). The store and the
	// installer passed to New are fenced by the caller (store.Fenced,
	// install.Options.Fence).
	Fence func() error
	// Revocations keeps the CA's revocation list: the parent sends its
	// list, which is kept if newer, and a parent it revokes is left.
	// nil: lists from the parent are ignored.
	Revocations *transport.RevocationKeeper
	// Self tells this node's own certificate as it is now, for status and
	// metrics; nil: not shown.
	Self func() transport.Identity
	// Agent revisions (builds of ted: distribution.KindAgent) are stored
	// like any revision but never extracted: OnAgent, if set, is given
	// each one stored for this node's platform (others are ignored), with
	// the parent's ted version, and says what became of it (the state and
	// reason shown for it). Without it they are held, not used.
	OnAgent func(ctx context.Context, m *distribution.Manifest, parentAgent string) (state, reason string)
}

// DefaultConfig returns a configuration with every default spelled out.
func DefaultConfig() Config {
	return Config{
		Parents: transport.DefaultParentsConfig(),
		// Three revisions: the current one, and two to roll back to.
		KeepRevisions: 3,
		Fetch:         transport.DefaultFetchOptions(),
		// 8 MiB: a sync costs a few milliseconds; on a slow link 8 MiB is
		// minutes of transfer that a kill must not cost again.
		CheckpointBytes: 8 << 20,
		RetryMin:        5 * time.Second,
		RetryMax:        5 * time.Minute,
		// Once a second: enough for a person watching, little for a parent
		// with thousands of children.
		StatusEvery: time.Second,
		Extract:     schedule.Always,
		// Five minutes: long enough to stop and start a service, short
		// enough that a hung script does not hold extraction for good.
		ActionTimeout: 5 * time.Minute,
		Clock:         schedule.SystemClock(),
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if err := distribution.ValidName("name", c.Name); err != nil {
		errs = append(errs, err)
	}
	if len(c.Parents.Addrs) == 0 {
		errs = append(errs, errors.New("parents: none"))
	}
	if len(c.Channels) == 0 {
		errs = append(errs, errors.New("channels: none"))
	}
	for _, ch := range c.Channels {
		if err := distribution.ValidName("channel", ch); err != nil {
			errs = append(errs, fmt.Errorf("channels: %w", err))
		}
	}
	if c.Trust == nil || len(c.Trust.KeyIDs()) == 0 {
		errs = append(errs, errors.New("trust: no publisher key"))
	}
	if c.Root == "" {
		errs = append(errs, errors.New("root: empty"))
	}
	if c.KeepRevisions < 1 {
		errs = append(errs, fmt.Errorf("keep_revisions: %d, want at least 1", c.KeepRevisions))
	}
	if c.Schedules == nil {
		if src, err := schedule.NewSource("", []string{c.Extract}); err != nil {
			errs = append(errs, fmt.Errorf("extract: %w", err))
		} else {
			c.Schedules = src
		}
	}
	if c.Clock == nil {
		c.Clock = schedule.SystemClock()
	}
	if c.ActionTimeout <= 0 {
		errs = append(errs, fmt.Errorf("action timeout %v: must be positive", c.ActionTimeout))
	}
	if c.CheckpointBytes <= 0 || c.RetryMin <= 0 || c.RetryMax < c.RetryMin || c.StatusEvery <= 0 {
		errs = append(errs, errors.New("checkpoint, retry and status intervals must be positive"))
	}
	return errors.Join(errs...)
}
