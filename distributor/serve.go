package distributor

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"

	"ted/distribution"
	"ted/store"
	"ted/transport"
)

// serving is what the children of a distributor share, so that what a
// revision costs to offer and serve does not grow with their number: an
// offer encoded once per revision, the latest revisions of a set of
// channels read once per change of the store, a chunk read and verified
// once while children keep asking for it, and a bound on the chunks being
// sent to children at once.
type serving struct {
	offers offerCache
	chunks chunkCache
	// sendSlots bounds the chunks being handed to children's streams at
	// once, so that thousands of children pulling cannot crowd out the
	// transfer from the publisher or parent that they pull through: that
	// one is not bounded by it.
	sendSlots *semaphore.Weighted
	nSlots    int64
}

// chunkCacheBytes bounds the verified chunks kept for children: 32 MiB is
// about 2,000 chunks of the 16 KiB average, the part of a revision that
// children pulling it at once are spread over, so a chunk is read from the
// store and verified once while they pass, rather than once per child.
const chunkCacheBytes = 32 << 20

// sendSlotsPerCPU times GOMAXPROCS is how many chunk streams may be
// sending to children at once. A stream takes a slot once a want's first
// chunk is at hand and keeps it while that want's chunks go, up to
// transport's maxSlotBytes (transport.Gated): a few connections sending at
// full speed, one after the other, pack larger batches of packets and hold
// less in quic-go's buffers than every child's connection sending a chunk
// at a time. The slots bound the CPU the children take from the transfer
// they pull through, which takes none. Measured with bench/fleet on 2
// cores, children fetching 1 MiB each: at 3,000, 32, 64, 256 slots kept
// per want took 29, 21, 23 s with a peak RSS of 483, 472, 580 MiB, where
// 64 and 512 slots taken per chunk took 30 and 29–34 s with 609 and
// 853–1,064 MiB; at 10,000, where round trips stretch and a slot is kept
// longer, 64 slots kept per want took 191 s (peak 1,600 MiB) and 256,
// 105 s (1,695 MiB), where 512 taken per chunk took 179 s (2.4 GiB).
const sendSlotsPerCPU = 128

func newServing() *serving {
	n := int64(sendSlotsPerCPU * runtime.GOMAXPROCS(0))
	return &serving{
		offers:    offerCache{latest: map[string]latestOffers{}, revs: map[revKey]*offerRev{}},
		chunks:    newChunkCache(chunkCacheBytes),
		sendSlots: semaphore.NewWeighted(n),
		nSlots:    n,
	}
}

func newChunkCache(max int64) chunkCache {
	return chunkCache{max: max, byID: map[distribution.ChunkID]*list.Element{}, flights: map[distribution.ChunkID]*flight{}}
}

// offerCache holds, for the children's offer loops, the latest revisions
// of each set of channels and each revision's encoded offer.
type offerCache struct {
	mu sync.Mutex
	// latest is by channel set (channelsKey), read under the wake channel
	// it is kept with: every change of the store (a revision stored or
	// pruned) is followed by notify, which replaces d.wake, so a list read
	// after a child took its wake is good for every child holding that
	// same wake.
	latest map[string]latestOffers
	revs   map[revKey]*offerRev
	// fill makes one caller read a list or prepare an offer while the
	// others that missed the same entry wait for its result: a publish
	// wakes every child's offer loop at once, and 10,000 of them must not
	// each compress the same manifest.
	fill singleflight.Group
}

type latestOffers struct {
	wake chan struct{}
	revs []*offerRev
}

// offerRev is one revision as offered: its name, revision and channels,
// and the offer message, encoded (compressed) once for every child.
type offerRev struct {
	key      revKey
	channels []string
	offer    *transport.Prepared
}

// channelsKey names a set of channels, given sorted or in the child's
// order: a child's channels come from its hello, and children of one kind
// ask for the same ones.
func channelsKey(channels []string) string { return strings.Join(channels, "\x00") }

// latestOffers returns the latest stored revision of every distribution
// published into any of channels, ready to offer, as of wake (d.wake,
// read by the caller before).
func (d *Distributor) latestOffers(channels []string, wake chan struct{}) ([]*offerRev, error) {
	oc := &d.serving.offers
	k := channelsKey(channels)
	oc.mu.Lock()
	l, ok := oc.latest[k]
	oc.mu.Unlock()
	if ok && l.wake == wake {
		return l.revs, nil
	}
	v, err, _ := oc.fill.Do(fmt.Sprintf("latest %p %s", wake, k), func() (any, error) {
		return d.readLatestOffers(channels, k, wake)
	})
	if err != nil {
		return nil, err
	}
	return v.([]*offerRev), nil
}

// readLatestOffers is latestOffers for the one caller that reads the list.
func (d *Distributor) readLatestOffers(channels []string, k string, wake chan struct{}) ([]*offerRev, error) {
	oc := &d.serving.offers
	infos, err := d.latestFor(channels)
	if err != nil {
		return nil, err
	}
	revs := make([]*offerRev, 0, len(infos))
	for _, info := range infos {
		or, err := d.offerRevision(revKey{info.Name, info.Revision}, nil, nil)
		if err != nil {
			d.log.Warn("offer", "dist", info.Name, "rev", info.Revision, "err", err)
			continue
		}
		revs = append(revs, or)
	}
	oc.mu.Lock()
	// Lists read under a wake that has been replaced (closed) are of no
	// more use: they go, so the map holds the channel sets asked for since
	// the last change, not every set ever asked for. A list read under a
	// replaced wake is not kept either; one read under the current wake by
	// a child that is ahead is left alone.
	for k, l := range oc.latest {
		if closed(l.wake) {
			delete(oc.latest, k)
		}
	}
	if !closed(wake) {
		oc.latest[k] = latestOffers{wake: wake, revs: revs}
	}
	oc.mu.Unlock()
	return revs, nil
}

// offerRevision returns the offer of revision key, made once: from s and
// m if given (a revision being received), else from the store.
func (d *Distributor) offerRevision(key revKey, s *distribution.Signed, m *distribution.Manifest) (*offerRev, error) {
	oc := &d.serving.offers
	oc.mu.Lock()
	or, ok := oc.revs[key]
	oc.mu.Unlock()
	if ok {
		return or, nil
	}
	v, err, _ := oc.fill.Do(fmt.Sprintf("offer %s@%d", key.name, key.rev), func() (any, error) {
		return d.prepareOffer(key, s, m)
	})
	if err != nil {
		return nil, err
	}
	return v.(*offerRev), nil
}

// closed reports whether a wake channel has been closed (replaced).
func closed(wake chan struct{}) bool {
	select {
	case <-wake:
		return true
	default:
		return false
	}
}

// prepareOffer is offerRevision for the one caller that prepares it.
func (d *Distributor) prepareOffer(key revKey, s *distribution.Signed, m *distribution.Manifest) (*offerRev, error) {
	oc := &d.serving.offers
	if s == nil {
		var err error
		if s, err = d.store.Signed(key.name, key.rev); err != nil {
			return nil, err
		}
		if m, err = s.Manifest(); err != nil {
			return nil, err
		}
	}
	offer, err := transport.Prepare(&transport.Offer{Signed: s})
	if err != nil {
		return nil, err
	}
	or := &offerRev{key: key, channels: m.Channels, offer: offer}
	oc.mu.Lock()
	if have, ok := oc.revs[key]; ok {
		or = have // another child made it meanwhile
	} else {
		// Only the latest revision of a distribution, or one being
		// received after it, is offered: older ones are not kept.
		for k := range oc.revs {
			if k.name == key.name && k.rev < key.rev {
				delete(oc.revs, k)
			}
		}
		oc.revs[key] = or
	}
	oc.mu.Unlock()
	return or, nil
}

// forgetOffers drops the offers of pruned revisions.
func (d *Distributor) forgetOffers(name string, revs []uint64) {
	oc := &d.serving.offers
	oc.mu.Lock()
	for _, rev := range revs {
		delete(oc.revs, revKey{name, rev})
	}
	oc.mu.Unlock()
}

// latestFor returns the latest stored revision of every distribution
// published into any of channels.
func (d *Distributor) latestFor(channels []string) ([]store.RevisionInfo, error) {
	latest := map[string]store.RevisionInfo{}
	for _, ch := range channels {
		revs, err := d.store.ChannelRevisions(ch)
		if err != nil {
			return nil, err
		}
		for _, r := range revs {
			if r.Revision > latest[r.Name].Revision {
				latest[r.Name] = r
			}
		}
	}
	out := make([]store.RevisionInfo, 0, len(latest))
	for _, name := range sortedNames(latest) {
		out = append(out, latest[name])
	}
	return out, nil
}

// chunkCache keeps the encoded bytes of chunks served to children, already
// checked against their ids, up to max bytes, the least recently served
// leaving first. A chunk's bytes never change (its id is their hash), so
// a cached copy is never stale. Children asking for a chunk that is being
// read wait for that read rather than starting their own.
type chunkCache struct {
	max int64

	mu      sync.Mutex
	size    int64
	lru     list.List // of *cachedChunk, the most recently served first
	byID    map[distribution.ChunkID]*list.Element
	flights map[distribution.ChunkID]*flight
}

type cachedChunk struct {
	id   distribution.ChunkID
	data []byte
}

// flight is one read of a chunk that others wait for.
type flight struct {
	done chan struct{}
	data []byte
	err  error
}

// get returns a cached chunk. Its bytes are shared: read-only.
func (cc *chunkCache) get(id distribution.ChunkID) ([]byte, bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if e, ok := cc.byID[id]; ok {
		cc.lru.MoveToFront(e)
		return e.Value.(*cachedChunk).data, true
	}
	return nil, false
}

// put caches a verified chunk, making room for it.
func (cc *chunkCache) put(id distribution.ChunkID, data []byte) {
	if int64(len(data)) > cc.max/16 {
		return // not worth what it would push out
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if _, ok := cc.byID[id]; ok {
		return
	}
	cc.byID[id] = cc.lru.PushFront(&cachedChunk{id: id, data: data})
	cc.size += int64(len(data))
	for cc.size > cc.max {
		e := cc.lru.Back()
		c := cc.lru.Remove(e).(*cachedChunk)
		delete(cc.byID, c.id)
		cc.size -= int64(len(c.data))
	}
}

// load returns chunk id from the cache, or from read, once for all who ask
// at the same time; what read returns is cached. A waiter whose read ended
// with the reader's context, not its own, reads again itself.
func (cc *chunkCache) load(ctx context.Context, id distribution.ChunkID, read func() ([]byte, error)) ([]byte, error) {
	for {
		cc.mu.Lock()
		if e, ok := cc.byID[id]; ok {
			cc.lru.MoveToFront(e)
			cc.mu.Unlock()
			return e.Value.(*cachedChunk).data, nil
		}
		f, waiting := cc.flights[id]
		if !waiting {
			f = &flight{done: make(chan struct{})}
			cc.flights[id] = f
		}
		cc.mu.Unlock()
		if !waiting {
			f.data, f.err = read()
			if f.err == nil {
				cc.put(id, f.data)
			}
			cc.mu.Lock()
			delete(cc.flights, id)
			cc.mu.Unlock()
			close(f.done)
			return f.data, f.err
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if f.err == nil {
			return f.data, nil
		}
		if !isContextErr(f.err) {
			return nil, f.err
		}
		// The reader gave up (its child went away): try again.
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// gatedProvider is a child's chunk provider whose sends share the
// distributor's send slots (transport.Gated).
type gatedProvider struct {
	transport.ChunkProviderFunc
	slots *semaphore.Weighted
}

func (g gatedProvider) SendSlots() *semaphore.Weighted { return g.slots }
