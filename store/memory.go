package store

import (
	"cmp"
	"slices"
	"sync"

	"ted/distribution"
)

// Memory is a Store held in memory: a test double for the packages that use
// a store, with the same behaviour as Badger (both pass storetest.Run),
// including pending chunks and collection. DiskBytes is always 0.
type Memory struct {
	core
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	e := &memoryEngine{
		chunks: make(map[distribution.ChunkID][]byte),
		byName: make(map[string]map[uint64]*revisionRecord),
	}
	return &Memory{core: newCore(e)}
}

// memoryEngine keeps records in maps. It copies every byte slice that goes in
// or out, as a disk would.
type memoryEngine struct {
	mu     sync.RWMutex
	chunks map[distribution.ChunkID][]byte
	byName map[string]map[uint64]*revisionRecord // name, revision
}

func (e *memoryEngine) chunk(id distribution.ChunkID) ([]byte, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	b, ok := e.chunks[id]
	if !ok {
		return nil, chunkMissing(id)
	}
	return slices.Clone(b), nil
}

func (e *memoryEngine) hasChunk(id distribution.ChunkID) (bool, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	_, ok := e.chunks[id]
	return ok, nil
}

func (e *memoryEngine) putChunk(id distribution.ChunkID, encoded []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.chunks[id]; !ok {
		e.chunks[id] = slices.Clone(encoded)
	}
	return nil
}

func (e *memoryEngine) replaceChunk(id distribution.ChunkID, encoded []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.chunks[id] = slices.Clone(encoded)
	return nil
}

func (e *memoryEngine) missingChunks(ids []distribution.ChunkID) ([]distribution.ChunkID, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var missing []distribution.ChunkID
	for _, id := range ids {
		if _, ok := e.chunks[id]; !ok {
			missing = append(missing, id)
		}
	}
	return missing, nil
}

func (e *memoryEngine) hasRevision(name string, rev uint64) (bool, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	_, ok := e.byName[name][rev]
	return ok, nil
}

func (e *memoryEngine) addRevision(r *revisionRecord) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	revs := e.byName[r.info.Name]
	if _, ok := revs[r.info.Revision]; ok {
		return ErrExists
	}
	if revs == nil {
		revs = make(map[uint64]*revisionRecord)
		e.byName[r.info.Name] = revs
	}
	revs[r.info.Revision] = &revisionRecord{
		info:     r.info.clone(),
		envelope: slices.Clone(r.envelope),
		chunks:   slices.Clone(r.chunks),
	}
	return nil
}

func (e *memoryEngine) signed(name string, rev uint64) ([]byte, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	r, ok := e.byName[name][rev]
	if !ok {
		return nil, ErrNotFound
	}
	return slices.Clone(r.envelope), nil
}

func (e *memoryEngine) revisions(name string) ([]RevisionInfo, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var infos []RevisionInfo
	for _, r := range e.byName[name] {
		infos = append(infos, r.info.clone())
	}
	slices.SortFunc(infos, func(a, b RevisionInfo) int { return cmp.Compare(a.Revision, b.Revision) })
	return infos, nil
}

func (e *memoryEngine) distributions() ([]string, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	names := make([]string, 0, len(e.byName))
	for name := range e.byName {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

func (e *memoryEngine) channelRevisions(channel string) ([]RevisionInfo, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var infos []RevisionInfo
	for _, revs := range e.byName {
		for _, r := range revs {
			if slices.Contains(r.info.Channels, channel) {
				infos = append(infos, r.info.clone())
			}
		}
	}
	slices.SortFunc(infos, func(a, b RevisionInfo) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Revision, b.Revision))
	})
	return infos, nil
}

func (e *memoryEngine) deleteRevisions(name string, revs []uint64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, rev := range revs {
		delete(e.byName[name], rev)
	}
	if len(e.byName[name]) == 0 {
		delete(e.byName, name)
	}
	return nil
}

func (e *memoryEngine) eachReference(fn func(distribution.ChunkID)) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, revs := range e.byName {
		for _, r := range revs {
			for _, id := range r.chunks {
				fn(id)
			}
		}
	}
	return nil
}

func (e *memoryEngine) eachChunk(fn func(distribution.ChunkID, int64)) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for id, b := range e.chunks {
		fn(id, int64(len(b)))
	}
	return nil
}

func (e *memoryEngine) deleteChunks(ids []distribution.ChunkID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range ids {
		delete(e.chunks, id)
	}
	return nil
}

// reclaim has nothing to do: deleted records are garbage for the Go runtime.
func (e *memoryEngine) reclaim() error { return nil }

func (e *memoryEngine) usage() (Usage, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	u := Usage{Distributions: len(e.byName), Chunks: len(e.chunks)}
	for _, revs := range e.byName {
		u.Revisions += len(revs)
	}
	for _, b := range e.chunks {
		u.ChunkBytes += int64(len(b))
	}
	return u, nil
}

// sync has nothing to do: memory is as durable as it gets.
func (e *memoryEngine) sync() error { return nil }

func (e *memoryEngine) close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.chunks, e.byName = nil, nil
	return nil
}
