package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"ted/distribution"
)

// Options says how Open treats the directory.
type Options struct {
	// Create makes a new store when the directory does not exist or is
	// empty. Without it, Open only opens an existing store.
	Create bool
	// Logger receives badger's warnings and errors (its chatter below
	// warning level is dropped). Nil discards them.
	Logger *slog.Logger
	// NoLock opens the store without locking it against other processes.
	// Only tests set it, to play shared storage whose locks are not
	// coherent across hosts (as on some network file systems).
	NoLock bool
}

// Badger is a Store on disk, in a directory that holds a TED-STORE marker
// file, the badger database under badger/ and the chunk bytes in pack files
// under packs/ (packs.go). One process at a time may open it.
type Badger struct {
	core
}

var _ Store = (*Badger)(nil)

// Badger settings. A node must stay within 256 MiB of RSS and an idle
// subscriber within 40 MiB (TED's memory budgets), whatever
// the size of what it stores, so every cache and buffer is small and fixed.
// Chunk bytes are not in badger: its value log is mapped into memory, and
// every page of it read or written counted as RSS (building 1 GiB took the
// process to 1.1 GiB of RSS, against 77 MiB with packs).
const (
	// valueThreshold sends every value of 1 KiB or more (manifest parts,
	// reference lists) to the value log, so the LSM tree holds only keys,
	// chunk locations and the small index records.
	valueThreshold = 1 << 10
	// valueLogFileSize is the unit of value-log garbage collection: a file
	// is rewritten once half of it is garbage, and the file being written
	// is never collected. Smaller files give space back sooner and keep
	// less of the written file mapped; 32 MiB still means only 128 files
	// for 4 GiB.
	valueLogFileSize = 32 << 20
	// memTableSize: the memtable holds keys and value pointers only
	// (about 250 bytes per chunk), so 4 MiB covers about 15,000 chunks
	// between flushes. Badger allocates each memtable's arena (a little
	// more than this) up front, on the heap.
	memTableSize = 4 << 20
	// numMemtables: one being written, one being flushed.
	numMemtables = 2
	// gcDiscardRatio is the share of garbage at which a value log file is
	// rewritten: badger's recommendation, which bounds the value log to
	// about twice the live data plus the file being written.
	gcDiscardRatio = 0.5
	// maxGCRounds bounds one reclaim; each round rewrites one file.
	maxGCRounds = 10_000
)

func badgerOptions(dir string, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(valueLogFileSize).
		WithNumVersionsToKeep(1).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		// Keys are hashes and values are pointers or already compressed:
		// nothing to gain from block compression, and without compression
		// badger reads tables straight from their mapping, needing no
		// block cache (the default one is 256 MiB).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		// 0 keeps table indexes and bloom filters on the heap, about
		// 2 MiB per million keys (two keys per chunk), instead of in a
		// cache with its own overhead and goroutines.
		WithIndexCacheSize(0).
		// The LSM tree is small (keys only): two compactors, the minimum
		// badger accepts, are plenty, and the node has other work.
		WithNumCompactors(2).
		// Writes are either idempotent (content-addressed chunks) or
		// serialised by the store's own lock, so conflict detection would
		// only turn two concurrent puts of one chunk into a spurious error.
		WithDetectConflicts(false).
		// Badger's metrics live in process-wide expvars; the store reports
		// its own usage.
		WithMetricsEnabled(false).
		// Chunks are written without a sync each; AddRevision syncs what
		// it depends on (see badgerEngine.syncChunks).
		WithSyncWrites(false)
}

// Open opens the store in dir, creating it if opts.Create says so; see
// Options and the errors ErrLocked and ErrNotAStore.
func Open(dir string, opts Options) (*Badger, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := prepareDir(dir, opts.Create); err != nil {
		return nil, err
	}
	lock := &dirLock{}
	bo := badgerOptions(filepath.Join(dir, badgerDir), log.With(slog.String("store", dir)))
	if opts.NoLock {
		bo = bo.WithBypassLockGuard(true)
	} else {
		var err error
		if lock, err = lockDir(dir); err != nil {
			return nil, err
		}
	}
	db, err := badger.Open(bo)
	if err != nil {
		_ = lock.release() // the open error says more
		// Badger's own directory lock: only reached where lockDir cannot
		// lock, as badger does not wrap the error it gets.
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("open store %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	pk, err := openPacks(dir)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open store %s: %w", dir, err), db.Close(), lock.release())
	}
	e := &badgerEngine{db: db, dir: dir, lock: lock, packs: pk, unindexed: make(map[distribution.ChunkID]location)}
	return &Badger{core: newCore(e)}, nil
}

// badgerEngine keeps records in badger; see badger_keys.go for the layout.
type badgerEngine struct {
	db   *badger.DB
	dir  string
	lock *dirLock

	// writeMu is held shared by every write and exclusively while reclaim
	// forces a memtable flush: badger fails writes (ErrBlockedWrites)
	// during that flush instead of waiting.
	writeMu sync.RWMutex
	// reclaimMu serialises reclaims: badger's Flatten and value-log GC
	// expect to run alone, and so does pack compaction.
	reclaimMu sync.Mutex

	// packs holds the chunk bytes; badger holds where they are.
	packs *packs
	// idxMu guards unindexed: the locations of chunks appended to a pack
	// but not yet written to badger, which takes them in batches (one
	// transaction per chunk would cost more than the chunk's bytes).
	idxMu     sync.Mutex
	unindexed map[distribution.ChunkID]location
	// compactMu is held shared by every reader of a location and by
	// deletes, and exclusively by compaction while it moves index entries
	// to a new pack and removes the old one.
	compactMu sync.RWMutex
}

// indexBatch is how many chunk locations wait before they go to badger
// together.
const indexBatch = 4096

// lookup returns where a chunk is, if it is stored.
func (e *badgerEngine) lookup(id distribution.ChunkID) (location, bool, error) {
	e.idxMu.Lock()
	loc, ok := e.unindexed[id]
	e.idxMu.Unlock()
	if ok {
		return loc, true, nil
	}
	return e.indexed(id)
}

// indexed returns where badger says a chunk is.
func (e *badgerEngine) indexed(id distribution.ChunkID) (location, bool, error) {
	var loc location
	err := e.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(chunkKey(prefixChunk, id))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			loc, err = decodeLocation(v)
			return err
		})
	})
	switch {
	case err == nil:
		return loc, true, nil
	case errors.Is(err, badger.ErrKeyNotFound):
		return location{}, false, nil
	}
	return location{}, false, fmt.Errorf("chunk %s: %w", id.Short(), err)
}

// forgetLostLocked drops the unindexed chunks of packs whose writes failed:
// their bytes may never reach the disk, so they are not stored, and a
// sender will be asked for them again. Called with idxMu held.
func (e *badgerEngine) forgetLostLocked() {
	lost := e.packs.takeLost()
	for id, loc := range e.unindexed {
		if _, ok := lost[loc.pack]; ok {
			delete(e.unindexed, id)
		}
	}
}

// flushIndex makes the appended chunks durable in their packs, then writes
// their locations to badger: an index entry never points at bytes a crash
// could lose.
func (e *badgerEngine) flushIndex() error {
	e.idxMu.Lock()
	defer e.idxMu.Unlock()
	return e.flushIndexLocked()
}

func (e *badgerEngine) flushIndexLocked() error {
	if len(e.unindexed) == 0 {
		return nil
	}
	if err := e.packs.sync(); err != nil {
		e.forgetLostLocked()
		return err
	}
	e.writeMu.RLock()
	defer e.writeMu.RUnlock()
	wb := e.db.NewWriteBatch()
	defer wb.Cancel()
	for id, loc := range e.unindexed {
		if err := wb.Set(chunkKey(prefixChunk, id), loc.encode()); err != nil {
			return fmt.Errorf("index chunks: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("index chunks: %w", err)
	}
	clear(e.unindexed)
	return nil
}

func (e *badgerEngine) chunk(id distribution.ChunkID) ([]byte, error) {
	e.compactMu.RLock()
	defer e.compactMu.RUnlock()
	loc, ok, err := e.lookup(id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, chunkMissing(id)
	}
	return e.packs.read(id, loc)
}

func (e *badgerEngine) hasChunk(id distribution.ChunkID) (bool, error) {
	_, ok, err := e.lookup(id)
	return ok, err
}

// has reports whether key exists.
func has(txn *badger.Txn, key []byte) (bool, error) {
	_, err := txn.Get(key)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, badger.ErrKeyNotFound):
		return false, nil
	}
	return false, err
}

func (e *badgerEngine) putChunk(id distribution.ChunkID, encoded []byte) error {
	// The index is not looked up: every caller asks HasChunk first (a
	// build, a transfer's list of missing chunks), and a second lookup per
	// chunk was a tenth of a transfer's CPU. A chunk put twice anyway is
	// appended twice; the index points at the later copy and compaction
	// reclaims the other (it moves only indexed locations).
	e.idxMu.Lock()
	defer e.idxMu.Unlock()
	if _, ok := e.unindexed[id]; ok {
		return nil
	}
	loc, err := e.packs.append(id, encoded)
	if err != nil {
		e.forgetLostLocked()
		return err
	}
	e.unindexed[id] = loc
	if len(e.unindexed) >= indexBatch {
		return e.flushIndexLocked()
	}
	return nil
}

// replaceChunk appends a new copy and points the index at it; the old copy
// becomes garbage that compaction reclaims.
func (e *badgerEngine) replaceChunk(id distribution.ChunkID, encoded []byte) error {
	e.idxMu.Lock()
	defer e.idxMu.Unlock()
	loc, err := e.packs.append(id, encoded)
	if err != nil {
		e.forgetLostLocked()
		return err
	}
	e.unindexed[id] = loc
	return e.flushIndexLocked()
}

func (e *badgerEngine) missingChunks(ids []distribution.ChunkID) ([]distribution.ChunkID, error) {
	var missing []distribution.ChunkID
	if err := e.flushIndex(); err != nil {
		return nil, err
	}
	// Read-only: Get does not count against badger's transaction size, so
	// a revision of any number of chunks is checked in one snapshot.
	err := e.db.View(func(txn *badger.Txn) error {
		for _, id := range ids {
			ok, err := has(txn, chunkKey(prefixChunk, id))
			if err != nil {
				return err
			}
			if !ok {
				missing = append(missing, id)
			}
		}
		return nil
	})
	return missing, err
}

func (e *badgerEngine) hasRevision(name string, rev uint64) (bool, error) {
	var found bool
	err := e.db.View(func(txn *badger.Txn) error {
		var err error
		found, err = has(txn, revisionKey(prefixRevision, name, rev))
		return err
	})
	return found, err
}

func (e *badgerEngine) addRevision(r *revisionRecord) error {
	info, err := json.Marshal(r.info)
	if err != nil {
		return err
	}
	refs := make([]byte, 0, len(r.chunks)*len(distribution.ChunkID{}))
	for _, id := range r.chunks {
		refs = append(refs, id[:]...)
	}
	name, rev := r.info.Name, r.info.Revision

	// Every chunk of the revision must be on disk before the revision can
	// be: the kernel writes dirty pages back in any order.
	if err := e.syncChunks(); err != nil {
		return fmt.Errorf("sync chunks: %w", err)
	}
	e.writeMu.RLock()
	defer e.writeMu.RUnlock()
	// One transaction: a large manifest is a few values in the value log
	// and a pointer each in the transaction, far below badger's limit.
	err = e.db.Update(func(txn *badger.Txn) error {
		key := revisionKey(prefixRevision, name, rev)
		if ok, err := has(txn, key); err != nil {
			return err
		} else if ok {
			return ErrExists
		}
		if err := txn.Set(key, info); err != nil {
			return err
		}
		if err := setParts(txn, revisionKey(prefixManifest, name, rev), r.envelope); err != nil {
			return err
		}
		if err := setParts(txn, revisionKey(prefixRefs, name, rev), refs); err != nil {
			return err
		}
		for _, ch := range r.info.Channels {
			if err := txn.Set(channelKey(ch, name, rev), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return e.db.Sync()
}

// syncChunks makes every write so far durable: the packs and the index
// entries pointing into them. With SyncWrites off, badger
// syncs a value log file when it moves on to the next one, and Sync syncs the
// value log file being written and the log of the memtable being written; a
// full memtable waiting to be flushed keeps an unsynced log, which is synced
// here through its file.
func (e *badgerEngine) sync() error { return e.syncChunks() }

func (e *badgerEngine) syncChunks() error {
	if err := e.flushIndex(); err != nil {
		return err
	}
	return e.syncIndex()
}

// syncIndex makes every badger write so far durable. Sync covers the log of
// the memtable being written but not that of a full memtable waiting to be
// flushed, which is synced here through its file.
func (e *badgerEngine) syncIndex() error {
	logs, err := filepath.Glob(filepath.Join(e.dir, badgerDir, "*.mem"))
	if err != nil {
		return err
	}
	for _, name := range logs {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue // flushed meanwhile: its table is synced
		}
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	return e.db.Sync()
}

// setParts stores b under base followed by part numbers.
func setParts(txn *badger.Txn, base, b []byte) error {
	for part := uint32(0); ; part++ {
		n := min(len(b), partBytes)
		if err := txn.Set(partKey(base, part), b[:n]); err != nil {
			return err
		}
		b = b[n:]
		if len(b) == 0 {
			return nil
		}
	}
}

// eachPart calls fn with the value of every part stored under base, in
// order; the value is valid only during the call.
func eachPart(txn *badger.Txn, base []byte, fn func([]byte) error) (parts int, err error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: base})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := it.Item().Value(fn); err != nil {
			return parts, err
		}
		parts++
	}
	return parts, nil
}

func (e *badgerEngine) signed(name string, rev uint64) ([]byte, error) {
	var envelope []byte
	err := e.db.View(func(txn *badger.Txn) error {
		parts, err := eachPart(txn, revisionKey(prefixManifest, name, rev), func(v []byte) error {
			envelope = append(envelope, v...)
			return nil
		})
		if err == nil && parts == 0 {
			return ErrNotFound
		}
		return err
	})
	return envelope, err
}

func (e *badgerEngine) revisions(name string) ([]RevisionInfo, error) {
	var infos []RevisionInfo
	err := e.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = namePrefix(prefixRevision, name)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			info, err := decodeInfo(it.Item())
			if err != nil {
				return err
			}
			infos = append(infos, info)
		}
		return nil
	})
	return infos, err
}

func decodeInfo(item *badger.Item) (RevisionInfo, error) {
	var info RevisionInfo
	err := item.Value(func(v []byte) error { return json.Unmarshal(v, &info) })
	if err != nil {
		return info, fmt.Errorf("index entry %q: %w", item.Key(), err)
	}
	return info, nil
}

func (e *badgerEngine) distributions() ([]string, error) {
	names := []string{}
	err := e.db.View(func(txn *badger.Txn) error {
		p := prefix(prefixRevision)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
		defer it.Close()
		for it.Rewind(); it.Valid(); {
			name, _, ok := parseNameRev(it.Item().Key()[len(p):])
			if !ok {
				return fmt.Errorf("malformed index key %q", it.Item().Key())
			}
			names = append(names, name)
			// Skip the other revisions of name: NAME\1 sorts after them all.
			it.Seek(append(append(prefix(prefixRevision), name...), 1))
		}
		return nil
	})
	return names, err
}

func (e *badgerEngine) channelRevisions(channel string) ([]RevisionInfo, error) {
	var infos []RevisionInfo
	err := e.db.View(func(txn *badger.Txn) error {
		p := namePrefix(prefixChannel, channel)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			name, rev, ok := parseNameRev(it.Item().Key()[len(p):])
			if !ok {
				return fmt.Errorf("malformed channel key %q", it.Item().Key())
			}
			item, err := txn.Get(revisionKey(prefixRevision, name, rev))
			if err != nil {
				return fmt.Errorf("channel entry %s@%d: %w", name, rev, err)
			}
			info, err := decodeInfo(item)
			if err != nil {
				return err
			}
			infos = append(infos, info)
		}
		return nil
	})
	return infos, err
}

func (e *badgerEngine) deleteRevisions(name string, revs []uint64) error {
	e.writeMu.RLock()
	defer e.writeMu.RUnlock()
	for _, rev := range revs {
		if err := e.db.Update(func(txn *badger.Txn) error { return deleteRevision(txn, name, rev) }); err != nil {
			return fmt.Errorf("delete revision %s@%d: %w", name, rev, err)
		}
	}
	// Make the deletes durable before any chunk they release is deleted.
	return e.db.Sync()
}

// deleteRevision deletes a revision's records: a few dozen keys, well within
// one transaction.
func deleteRevision(txn *badger.Txn, name string, rev uint64) error {
	key := revisionKey(prefixRevision, name, rev)
	item, err := txn.Get(key)
	if err != nil {
		return err
	}
	info, err := decodeInfo(item)
	if err != nil {
		return err
	}
	doomed := [][]byte{key}
	for _, ch := range info.Channels {
		doomed = append(doomed, channelKey(ch, name, rev))
	}
	for _, p := range []byte{prefixManifest, prefixRefs} {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: revisionKey(p, name, rev)})
		for it.Rewind(); it.Valid(); it.Next() {
			doomed = append(doomed, it.Item().KeyCopy(nil))
		}
		it.Close()
	}
	for _, k := range doomed {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func (e *badgerEngine) eachReference(fn func(distribution.ChunkID)) error {
	return e.db.View(func(txn *badger.Txn) error {
		p := prefix(prefixRefs)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			err := it.Item().Value(func(v []byte) error {
				var id distribution.ChunkID
				if len(v)%len(id) != 0 {
					return fmt.Errorf("reference list %q: %d bytes, not whole chunk ids", it.Item().Key(), len(v))
				}
				for ; len(v) > 0; v = v[len(id):] {
					copy(id[:], v)
					fn(id)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func (e *badgerEngine) eachChunk(fn func(distribution.ChunkID, int64)) error {
	return e.eachLocation(func(id distribution.ChunkID, loc location) {
		fn(id, int64(loc.length))
	})
}

// eachLocation calls fn for every stored chunk with its location.
func (e *badgerEngine) eachLocation(fn func(distribution.ChunkID, location)) error {
	if err := e.flushIndex(); err != nil {
		return err
	}
	return e.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix(prefixChunk)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			id, ok := chunkIDOf(item.Key())
			if !ok {
				return fmt.Errorf("malformed chunk key %q", item.Key())
			}
			err := item.Value(func(v []byte) error {
				loc, err := decodeLocation(v)
				if err != nil {
					return fmt.Errorf("chunk %s: %w", id.Short(), err)
				}
				fn(id, loc)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func (e *badgerEngine) deleteChunks(ids []distribution.ChunkID) error {
	if err := e.flushIndex(); err != nil {
		return err
	}
	e.compactMu.RLock()
	defer e.compactMu.RUnlock()
	e.writeMu.RLock()
	defer e.writeMu.RUnlock()
	// A write batch splits itself into transactions below badger's size
	// limit: a revision may release tens of thousands of chunks.
	wb := e.db.NewWriteBatch()
	defer wb.Cancel()
	for _, id := range ids {
		if err := wb.Delete(chunkKey(prefixChunk, id)); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// reclaim gives back the space of deleted chunks (pack compaction) and of
// deleted manifests (value-log garbage collection).
//
// Badger rewrites a value log file only when its discard statistics say
// enough of it is garbage, and those statistics are counted by compactions,
// when a delete meets the value it deletes. Left alone, the deletes sit in
// the memtable (which fills slowly: it holds keys only) and RunValueLogGC
// finds nothing to do: TestBadgerDiskBounded then holds everything ever
// written. So: flush the memtable and compact level 0 into the next level
// (DropPrefix of a sentinel does both), flatten the tree so that deletes meet
// their values also once it has grown past one level below level 0 (a no-op
// until then), then rewrite files until none is worth it.
func (e *badgerEngine) reclaim() error {
	e.reclaimMu.Lock()
	defer e.reclaimMu.Unlock()
	if err := e.flush(); err != nil {
		return fmt.Errorf("flush memtable: %w", err)
	}
	if err := e.db.Flatten(1); err != nil {
		return fmt.Errorf("flatten: %w", err)
	}
	if err := e.compactPacks(); err != nil {
		return fmt.Errorf("compact packs: %w", err)
	}
	for range maxGCRounds {
		err := e.db.RunValueLogGC(gcDiscardRatio)
		switch {
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
			// Nothing left worth rewriting, or a collection already running
			// will do it.
			return nil
		case err != nil:
			return fmt.Errorf("value log gc: %w", err)
		}
	}
	return nil
}

// compactPacks removes packs without live chunks and rewrites those that
// are mostly garbage. Called with reclaimMu held.
//
// Only packs older than the one being written when the live bytes are
// counted are touched: new chunks only ever go to the pack being written
// (and compaction moves them there), so an older pack can lose live chunks
// meanwhile, never gain any.
func (e *badgerEngine) compactPacks() error {
	cur := e.packs.current()
	live, err := e.liveBytes()
	if err != nil {
		return err
	}
	// The pack being written holds garbage too once its chunks are
	// deleted: close it and count again, so it is compacted like the
	// others.
	sizes, _, err := e.packs.sizes()
	if err != nil {
		return err
	}
	if size := sizes[cur]; size >= packFileBytes/4 && float64(live[cur]) <= (1-packGarbageRatio)*float64(size) {
		if err := e.packs.rotateIf(cur); err != nil {
			return err
		}
		if sizes, cur, err = e.packs.sizes(); err != nil {
			return err
		}
		if live, err = e.liveBytes(); err != nil {
			return err
		}
	}
	// The deletes that emptied a pack must be durable before it goes, or
	// a crash would bring back entries pointing into a missing file.
	if err := e.syncIndex(); err != nil {
		return err
	}
	for id, size := range sizes {
		switch {
		case id >= cur:
		case live[id] == 0:
			e.compactMu.Lock()
			err = e.packs.remove(id)
			e.compactMu.Unlock()
		case float64(live[id]) <= (1-packGarbageRatio)*float64(size):
			err = e.compactPack(id)
		}
		if err != nil {
			return fmt.Errorf("pack %s: %w", packName(id), err)
		}
	}
	return nil
}

// liveBytes sums the bytes of indexed chunks per pack.
func (e *badgerEngine) liveBytes() (map[uint32]int64, error) {
	live := make(map[uint32]int64)
	err := e.eachLocation(func(_ distribution.ChunkID, loc location) {
		live[loc.pack] += int64(packHeaderBytes) + int64(loc.length)
	})
	return live, err
}

// compactPack copies the live chunks of a pack to the pack being written,
// moves their index entries, and removes the old pack.
func (e *badgerEngine) compactPack(pack uint32) error {
	type move struct {
		id       distribution.ChunkID
		from, to location
	}
	var moves []move
	err := e.eachLocation(func(id distribution.ChunkID, loc location) {
		if loc.pack == pack {
			moves = append(moves, move{id: id, from: loc})
		}
	})
	if err != nil {
		return err
	}
	for i := range moves {
		m := &moves[i]
		b, err := e.packs.read(m.id, m.from)
		if err != nil {
			return err
		}
		if m.to, err = e.packs.append(m.id, b); err != nil {
			return err
		}
	}
	if err := e.packs.sync(); err != nil {
		return err
	}
	// No reader may hold an old location while entries move and the old
	// pack goes; an entry deleted meanwhile stays deleted.
	e.compactMu.Lock()
	defer e.compactMu.Unlock()
	e.writeMu.RLock()
	defer e.writeMu.RUnlock()
	const perTxn = 1000
	for len(moves) > 0 {
		batch := moves[:min(perTxn, len(moves))]
		moves = moves[len(batch):]
		err := e.db.Update(func(txn *badger.Txn) error {
			for _, m := range batch {
				key := chunkKey(prefixChunk, m.id)
				item, err := txn.Get(key)
				if errors.Is(err, badger.ErrKeyNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				var current location
				if err := item.Value(func(v []byte) error {
					current, err = decodeLocation(v)
					return err
				}); err != nil {
					return err
				}
				if current == m.from {
					if err := txn.Set(key, m.to.encode()); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	// The moved entries must be durable before the pack they left goes.
	if err := e.syncIndex(); err != nil {
		return err
	}
	return e.packs.remove(pack)
}

// flush writes the memtables to level 0 and compacts level 0 into the next
// level. Badger has no call for that; DropPrefix does it on its way, provided
// there is something to drop, hence the sentinel.
func (e *badgerEngine) flush() error {
	e.writeMu.Lock()
	defer e.writeMu.Unlock()
	sentinel := append(prefix(prefixFlush), "flush"...)
	if err := e.db.Update(func(txn *badger.Txn) error { return txn.Set(sentinel, nil) }); err != nil {
		return err
	}
	return e.db.DropPrefix(prefix(prefixFlush))
}

func (e *badgerEngine) usage() (Usage, error) {
	var u Usage
	err := e.db.View(func(txn *badger.Txn) error {
		p := prefix(prefixRevision)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
		defer it.Close()
		var last []byte
		for it.Rewind(); it.Valid(); it.Next() {
			key := it.Item().Key()[len(p):]
			name := key[:max(bytes.IndexByte(key, 0), 0)]
			if !bytes.Equal(name, last) {
				u.Distributions++
				last = append(last[:0], name...)
			}
			u.Revisions++
		}
		return nil
	})
	if err != nil {
		return Usage{}, err
	}
	err = e.eachChunk(func(_ distribution.ChunkID, size int64) {
		u.Chunks++
		u.ChunkBytes += size
	})
	if err != nil {
		return Usage{}, err
	}
	u.DiskBytes, err = diskBytes(e.dir)
	return u, err
}

func (e *badgerEngine) close() error {
	err := errors.Join(e.flushIndex(), e.packs.close(), e.db.Close(), e.lock.release())
	if err != nil {
		return fmt.Errorf("close store %s: %w", e.dir, err)
	}
	return nil
}

// badgerLogger passes badger's warnings and errors to slog. Its info and
// debug messages (every compaction, every file) are dropped: they would
// drown a node's log.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(format string, args ...any) {
	l.log.Error("badger: " + strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (l badgerLogger) Warningf(format string, args ...any) {
	l.log.Warn("badger: " + strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
