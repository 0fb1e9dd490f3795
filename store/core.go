package store

import (
	"errors"
	"fmt"
	"sync"

	"ted/distribution"
)

// engine keeps and finds the records of a store. It knows nothing of
// retention, pending chunks or error wording: core holds that logic once for
// every engine. Names and channels reaching an engine are valid
// (distribution.ValidName), so they contain no NUL.
type engine interface {
	// chunk returns a copy of an encoded chunk, or an error wrapping
	// distribution.ErrChunkMissing.
	chunk(id distribution.ChunkID) ([]byte, error)
	hasChunk(id distribution.ChunkID) (bool, error)
	// putChunk stores a copy of encoded; a chunk already stored is left as
	// it is.
	putChunk(id distribution.ChunkID, encoded []byte) error
	// missingChunks returns the ids that are not stored, in the order of
	// ids, looked up in one snapshot.
	missingChunks(ids []distribution.ChunkID) ([]distribution.ChunkID, error)
	hasRevision(name string, rev uint64) (bool, error)
	// addRevision stores the record, its revision and channel index
	// entries atomically and durably; ErrExists if the revision is stored.
	addRevision(r *revisionRecord) error
	// signed returns the stored envelope bytes, or ErrNotFound.
	signed(name string, rev uint64) ([]byte, error)
	// revisions returns the revisions of name, oldest first (none: empty).
	revisions(name string) ([]RevisionInfo, error)
	distributions() ([]string, error)
	channelRevisions(channel string) ([]RevisionInfo, error)
	// deleteRevisions deletes revisions with their index entries, each
	// atomically.
	deleteRevisions(name string, revs []uint64) error
	// eachReference calls fn for every chunk id of every stored revision,
	// repeats included.
	eachReference(fn func(distribution.ChunkID)) error
	// eachChunk calls fn for every stored chunk with its encoded size.
	eachChunk(fn func(id distribution.ChunkID, size int64)) error
	deleteChunks(ids []distribution.ChunkID) error
	// reclaim gives the space of deleted records back to the file system.
	// It may run beside any other call, including another reclaim.
	reclaim() error
	usage() (Usage, error)
	// replaceChunk stores a copy of encoded in place of any stored copy.
	replaceChunk(id distribution.ChunkID, encoded []byte) error
	// sync makes every chunk put so far durable.
	sync() error
	close() error
}

// revisionRecord is what AddRevision stores.
type revisionRecord struct {
	info     RevisionInfo
	envelope []byte                 // Signed.Encode(), never re-encoded
	chunks   []distribution.ChunkID // distinct, in first use order
}

// errClosed is returned by every method of a closed store.
var errClosed = errors.New("store is closed")

// core implements Store over an engine: validation, error wording, pending
// chunks, retention and garbage collection, the same for every engine.
type core struct {
	engine engine

	// closeMu is held shared by every call and exclusively by Close, so
	// Close waits for calls in flight (a Prune, say) instead of pulling the
	// engine from under them.
	closeMu sync.RWMutex
	closed  bool

	// indexMu serialises AddRevision and Prune: a revision's chunks cannot
	// be collected between the check that they are all present and the
	// commit that makes them referenced.
	indexMu sync.Mutex

	// pendingMu guards pending and is held by Prune from its last look at
	// pending until its chunk deletes have committed, so a PutChunk either
	// marks its chunk before that look or stores it after the delete.
	pendingMu sync.Mutex
	pending   map[distribution.ChunkID]struct{}
}

func newCore(e engine) core {
	return core{engine: e, pending: make(map[distribution.ChunkID]struct{})}
}

// enter starts a call; the caller must call c.closeMu.RUnlock when done.
func (c *core) enter() error {
	c.closeMu.RLock()
	if c.closed {
		c.closeMu.RUnlock()
		return errClosed
	}
	return nil
}

// Chunk returns a copy of an encoded chunk, or an error wrapping
// distribution.ErrChunkMissing.
func (c *core) Chunk(id distribution.ChunkID) ([]byte, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.closeMu.RUnlock()
	return c.engine.chunk(id)
}

// HasChunk reports whether a chunk is stored. It does not pin the chunk; see
// the package documentation.
func (c *core) HasChunk(id distribution.ChunkID) (bool, error) {
	if err := c.enter(); err != nil {
		return false, err
	}
	defer c.closeMu.RUnlock()
	return c.engine.hasChunk(id)
}

// PutChunk stores an encoded chunk and marks it pending. It does not check
// that encoded is the chunk id names; callers do (distribution.DecodeChunk).
func (c *core) PutChunk(id distribution.ChunkID, encoded []byte) error {
	if len(encoded) == 0 || len(encoded) > distribution.MaxEncodedChunkBytes {
		return fmt.Errorf("put chunk %s: encoded size %d outside 1 to %d", id.Short(), len(encoded), distribution.MaxEncodedChunkBytes)
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.closeMu.RUnlock()
	// Mark before storing: a Prune that sees the chunk then also sees the
	// mark.
	c.pendingMu.Lock()
	c.pending[id] = struct{}{}
	c.pendingMu.Unlock()
	if err := c.engine.putChunk(id, encoded); err != nil {
		return fmt.Errorf("put chunk %s: %w", id.Short(), err)
	}
	return nil
}

// AddRevision stores a signed manifest whose content m has been verified:
// atomically with its index entries, and durably. It fails with
// ErrIncomplete, writing nothing, unless every chunk m references is stored,
// and with ErrExists if the revision is. The revision's chunks stop being
// pending.
func (c *core) AddRevision(s *distribution.Signed, m *distribution.Manifest) (RevisionInfo, error) {
	if s == nil || m == nil {
		return RevisionInfo{}, errors.New("add revision: no manifest")
	}
	label := fmt.Sprintf("%s@%d", m.Name, m.Revision)
	if err := checkIndexed(m); err != nil {
		return RevisionInfo{}, fmt.Errorf("add revision %q: %w", label, err)
	}
	if s.KeyID != m.KeyID {
		return RevisionInfo{}, fmt.Errorf("add revision %s: envelope key %s, manifest key %s", label, s.KeyID, m.KeyID)
	}
	if err := c.enter(); err != nil {
		return RevisionInfo{}, err
	}
	defer c.closeMu.RUnlock()

	ids := m.ChunkIDs()
	info := revisionInfo(m, len(ids))

	c.indexMu.Lock()
	defer c.indexMu.Unlock()
	if ok, err := c.engine.hasRevision(m.Name, m.Revision); err != nil {
		return RevisionInfo{}, fmt.Errorf("add revision %s: %w", label, err)
	} else if ok {
		return RevisionInfo{}, fmt.Errorf("add revision %s: %w", label, ErrExists)
	}
	missing, err := c.engine.missingChunks(ids)
	if err != nil {
		return RevisionInfo{}, fmt.Errorf("add revision %s: %w", label, err)
	}
	if len(missing) > 0 {
		return RevisionInfo{}, fmt.Errorf("add revision %s: %w: %d of %d chunks missing, the first is %s",
			label, ErrIncomplete, len(missing), len(ids), missing[0].Short())
	}
	if err := c.engine.addRevision(&revisionRecord{info: info, envelope: s.Encode(), chunks: ids}); err != nil {
		return RevisionInfo{}, fmt.Errorf("add revision %s: %w", label, err)
	}
	c.pendingMu.Lock()
	for _, id := range ids {
		delete(c.pending, id)
	}
	c.pendingMu.Unlock()
	return info.clone(), nil
}

// checkIndexed checks the fields of m that become part of index keys, which
// rely on them containing no NUL. Everything else was checked when m was
// verified.
func checkIndexed(m *distribution.Manifest) error {
	if err := distribution.ValidName("name", m.Name); err != nil {
		return err
	}
	if m.Revision == 0 {
		return errors.New("revision 0")
	}
	if len(m.Channels) == 0 {
		return errors.New("no channels")
	}
	for _, ch := range m.Channels {
		if err := distribution.ValidName("channel", ch); err != nil {
			return err
		}
	}
	return nil
}

// revisionInfo is the index entry of m, which references distinct chunks.
func revisionInfo(m *distribution.Manifest, distinct int) RevisionInfo {
	files, bytes, _ := m.Totals()
	return RevisionInfo{
		Name:     m.Name,
		Revision: m.Revision,
		Version:  m.Version,
		Channels: append([]string(nil), m.Channels...),
		Kind:     m.Kind,
		Files:    files,
		Bytes:    bytes,
		Chunks:   distinct,
		Created:  m.CreatedTime(),
		KeyID:    m.KeyID,
	}
}

// clone returns a copy that shares no memory with r.
func (r RevisionInfo) clone() RevisionInfo {
	r.Channels = append([]string(nil), r.Channels...)
	return r
}

// Signed returns a revision's envelope exactly as it was added; rev 0 means
// the latest revision. ErrNotFound names the distribution and revision.
func (c *core) Signed(name string, rev uint64) (*distribution.Signed, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.closeMu.RUnlock()
	if err := validDistribution(name); err != nil {
		return nil, err
	}
	if rev == 0 {
		latest, err := c.latest(name)
		if err != nil {
			return nil, err
		}
		rev = latest.Revision
	}
	b, err := c.engine.signed(name, rev)
	if errors.Is(err, ErrNotFound) {
		return nil, revisionNotFound(name, rev)
	}
	if err != nil {
		return nil, fmt.Errorf("revision %s@%d: %w", name, rev, err)
	}
	s, err := distribution.DecodeSigned(b)
	if err != nil {
		return nil, fmt.Errorf("revision %s@%d: stored manifest: %w", name, rev, err)
	}
	return s, nil
}

// Revisions returns the stored revisions of name, oldest first; ErrNotFound
// if there are none.
func (c *core) Revisions(name string) ([]RevisionInfo, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.closeMu.RUnlock()
	if err := validDistribution(name); err != nil {
		return nil, err
	}
	revs, err := c.engine.revisions(name)
	if err != nil {
		return nil, fmt.Errorf("distribution %s: %w", name, err)
	}
	if len(revs) == 0 {
		return nil, distributionNotFound(name)
	}
	return revs, nil
}

// Latest returns the newest stored revision of name; ErrNotFound if there
// is none.
func (c *core) Latest(name string) (RevisionInfo, error) {
	if err := c.enter(); err != nil {
		return RevisionInfo{}, err
	}
	defer c.closeMu.RUnlock()
	if err := validDistribution(name); err != nil {
		return RevisionInfo{}, err
	}
	return c.latest(name)
}

func (c *core) latest(name string) (RevisionInfo, error) {
	revs, err := c.engine.revisions(name)
	if err != nil {
		return RevisionInfo{}, fmt.Errorf("distribution %s: %w", name, err)
	}
	if len(revs) == 0 {
		return RevisionInfo{}, distributionNotFound(name)
	}
	return revs[len(revs)-1], nil
}

// Distributions returns the names of the stored distributions, sorted.
func (c *core) Distributions() ([]string, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.closeMu.RUnlock()
	return c.engine.distributions()
}

// ChannelRevisions returns every stored revision published into channel,
// ordered by name, then revision; none for a channel nothing was published
// into.
func (c *core) ChannelRevisions(channel string) ([]RevisionInfo, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.closeMu.RUnlock()
	if err := distribution.ValidName("channel", channel); err != nil {
		return nil, err
	}
	revs, err := c.engine.channelRevisions(channel)
	if err != nil {
		return nil, fmt.Errorf("channel %s: %w", channel, err)
	}
	return revs, nil
}

// Prune keeps the newest keep (at least 1) revisions of name, deletes the
// others, then deletes every chunk that no remaining revision of any
// distribution references and that is not pending, and gives the space back
// to the file system.
func (c *core) Prune(name string, keep int) (PruneResult, error) {
	if keep < 1 {
		return PruneResult{}, fmt.Errorf("prune %s: keep %d revisions: want at least 1", name, keep)
	}
	if err := c.enter(); err != nil {
		return PruneResult{}, err
	}
	defer c.closeMu.RUnlock()
	if err := validDistribution(name); err != nil {
		return PruneResult{}, err
	}

	result, err := c.prune(name, keep)
	if err != nil {
		return result, err
	}
	// Reclaiming may rewrite files for a while; revisions can be added
	// meanwhile.
	if len(result.RemovedRevisions) > 0 || result.RemovedChunks > 0 {
		if err := c.engine.reclaim(); err != nil {
			return result, fmt.Errorf("prune %s: reclaim space: %w", name, err)
		}
	}
	return result, nil
}

// prune deletes the revisions retention does not keep and collects chunks.
func (c *core) prune(name string, keep int) (PruneResult, error) {
	c.indexMu.Lock()
	defer c.indexMu.Unlock()
	revs, err := c.engine.revisions(name)
	if err != nil {
		return PruneResult{}, fmt.Errorf("prune %s: %w", name, err)
	}
	if len(revs) == 0 {
		return PruneResult{}, distributionNotFound(name)
	}
	var result PruneResult
	result.RemovedRevisions = selectPruned(revs, keep)
	if len(result.RemovedRevisions) > 0 {
		if err := c.engine.deleteRevisions(name, result.RemovedRevisions); err != nil {
			return PruneResult{}, fmt.Errorf("prune %s: %w", name, err)
		}
	}
	result.RemovedChunks, result.FreedBytes, err = c.collect()
	if err != nil {
		return result, fmt.Errorf("prune %s: %w", name, err)
	}
	return result, nil
}

// selectPruned returns the revisions, oldest first, that retention deletes
// from revs (ascending) when it keeps the newest keep.
func selectPruned(revs []RevisionInfo, keep int) []uint64 {
	if len(revs) <= keep {
		return nil
	}
	doomed := make([]uint64, 0, len(revs)-keep)
	for _, r := range revs[:len(revs)-keep] {
		doomed = append(doomed, r.Revision)
	}
	return doomed
}

// collect deletes every stored chunk that no stored revision references and
// that is not pending: mark, then sweep. The caller holds indexMu, so no
// revision appears or goes meanwhile.
func (c *core) collect() (removed int, freed int64, err error) {
	referenced := make(map[distribution.ChunkID]struct{})
	if err := c.engine.eachReference(func(id distribution.ChunkID) {
		referenced[id] = struct{}{}
	}); err != nil {
		return 0, 0, fmt.Errorf("mark referenced chunks: %w", err)
	}
	type candidate struct {
		id   distribution.ChunkID
		size int64
	}
	var candidates []candidate
	if err := c.engine.eachChunk(func(id distribution.ChunkID, size int64) {
		if _, ok := referenced[id]; !ok {
			candidates = append(candidates, candidate{id, size})
		}
	}); err != nil {
		return 0, 0, fmt.Errorf("list chunks: %w", err)
	}
	if len(candidates) == 0 {
		return 0, 0, nil
	}

	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	doomed := make([]distribution.ChunkID, 0, len(candidates))
	for _, cand := range candidates {
		if _, ok := c.pending[cand.id]; !ok {
			doomed = append(doomed, cand.id)
			freed += cand.size
		}
	}
	if len(doomed) == 0 {
		return 0, 0, nil
	}
	if err := c.engine.deleteChunks(doomed); err != nil {
		return 0, 0, fmt.Errorf("delete %d unreferenced chunks: %w", len(doomed), err)
	}
	return len(doomed), freed, nil
}

// Usage counts what the store holds.
func (c *core) Usage() (Usage, error) {
	if err := c.enter(); err != nil {
		return Usage{}, err
	}
	defer c.closeMu.RUnlock()
	return c.engine.usage()
}

// RepairChunk replaces a corrupt stored chunk with a checked good copy.
func (c *core) RepairChunk(id distribution.ChunkID, encoded []byte) error {
	if _, err := distribution.DecodeChunk(id, encoded); err != nil {
		return fmt.Errorf("repair chunk %s: %w", id.Short(), err)
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.closeMu.RUnlock()
	if err := c.engine.replaceChunk(id, encoded); err != nil {
		return fmt.Errorf("repair chunk %s: %w", id.Short(), err)
	}
	return nil
}

// MissingChunks returns those of ids the store does not hold, in order.
func (c *core) MissingChunks(ids []distribution.ChunkID) ([]distribution.ChunkID, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.closeMu.RUnlock()
	missing, err := c.engine.missingChunks(ids)
	if err != nil {
		return nil, fmt.Errorf("look up %d chunks: %w", len(ids), err)
	}
	return missing, nil
}

// Sync makes every chunk put so far durable.
func (c *core) Sync() error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.closeMu.RUnlock()
	if err := c.engine.sync(); err != nil {
		return fmt.Errorf("sync store: %w", err)
	}
	return nil
}

// Close releases the store; closing it again does nothing.
func (c *core) Close() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.pending = nil
	return c.engine.close()
}

// validDistribution refuses a name that cannot have been stored: no such
// distribution exists.
func validDistribution(name string) error {
	if err := distribution.ValidName("distribution name", name); err != nil {
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	return nil
}

func distributionNotFound(name string) error {
	return fmt.Errorf("distribution %s: %w", name, ErrNotFound)
}

func revisionNotFound(name string, rev uint64) error {
	return fmt.Errorf("revision %s@%d: %w", name, rev, ErrNotFound)
}

func chunkMissing(id distribution.ChunkID) error {
	return fmt.Errorf("chunk %s: %w", id.Short(), distribution.ErrChunkMissing)
}
