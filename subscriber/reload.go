package subscriber

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"ted/distribution"
	"ted/pki"
	"ted/transport"
)

// liveConfig is the part of the configuration that a reload changes; never
// modified once in use.
type liveConfig struct {
	channels []string
	trust    *distribution.Trust
}

// Reload puts in force new channels and trusted keys. A change of channels
// ends the session with the parent, so that the next session's hello asks
// for the new ones; new keys apply to the next offer. It returns what
// changed, in words, for the log.
func (s *Subscriber) Reload(channels []string, trust *distribution.Trust) ([]string, error) {
	next := s.cfg
	next.Channels, next.Trust = channels, trust
	if err := next.Validate(); err != nil {
		return nil, err
	}
	old := s.live.Load()
	var changes []string
	if !slices.Equal(old.channels, channels) {
		changes = append(changes, fmt.Sprintf("channels: %v", channels))
	}
	if !slices.Equal(old.trust.KeyIDs(), trust.KeyIDs()) {
		changes = append(changes, "trust: keys "+strings.Join(trust.KeyIDs(), ", "))
	}
	if len(changes) == 0 {
		return nil, nil
	}
	s.live.Store(&liveConfig{channels: slices.Clone(channels), trust: trust})
	if !slices.Equal(old.channels, channels) {
		s.mu.Lock()
		up := s.upstream
		s.mu.Unlock()
		if up != nil {
			s.log.Info("channels changed: connecting to the parent again with the new set", "channels", channels)
			up.Close(nil)
		}
	}
	return changes, nil
}

// revocations is the revocation list in force, nil if none.
func (s *Subscriber) revocations() *pki.Revocations {
	if s.cfg.Revocations == nil {
		return nil
	}
	return s.cfg.Revocations.Current()
}

// parentRevocations takes a revocation list that the parent sent: checked
// against the CA, kept in data_dir and put in force if newer.
func (s *Subscriber) parentRevocations(peer string) func(*transport.Revocations) error {
	return func(m *transport.Revocations) error {
		r, changed, err := s.cfg.Revocations.Receive(peer, m)
		if err != nil {
			return err
		}
		if changed {
			s.log.Info("newer revocation list from the parent", "peer", peer, "number", r.Number.String(), "revoked", len(r.Serials()))
		}
		return nil
	}
}

// leaveRevoked closes the session with the parent as soon as the list in
// force revokes the parent's certificate, telling it why.
func (s *Subscriber) leaveRevoked(ctx context.Context, sess transport.Session, log *slog.Logger) error {
	k := s.cfg.Revocations
	for {
		changed := k.Changed()
		if err := transport.RevokedError(k.Current(), sess.Peer()); err != nil {
			log.Warn("session closed: the parent's certificate is revoked", "err", err)
			sess.Close(err)
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}
