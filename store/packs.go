package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"ted/distribution"
)

// Chunk bytes live in append-only pack files under packs/, not in badger's
// value log; badger keeps only where each chunk is. Badger maps its value log
// into memory, and filling fresh mapped pages cost more CPU than everything
// else a build does (bench/README.md): written through write(2) the same
// bytes cost a fraction of that. Space of deleted chunks comes back by
// compaction: a pack that is mostly garbage has its live chunks copied to the
// pack being written, and is then removed.
const (
	packsDir = "packs"
	// packFileBytes is the size at which the pack being written is closed
	// and a new one started: the unit of compaction, as value-log files
	// were.
	packFileBytes = 32 << 20
	// packWriteBuffer batches appends into large writes.
	packWriteBuffer = 1 << 20
	// packHeaderBytes precede every chunk in a pack: its id and length,
	// so a pack can be checked, or the index rebuilt, from the packs alone.
	packHeaderBytes = len(distribution.ChunkID{}) + 4
	// writebackEvery is how many bytes of a pack are handed to the kernel
	// before it is asked to start writing them back (startWriteback).
	writebackEvery = 8 << 20
	// packGarbageRatio is the share of garbage at which a pack is
	// compacted: disk use stays below about twice the live chunks plus
	// the pack being written.
	packGarbageRatio = 0.5
)

// location says where a chunk's encoded bytes are: pack, offset of the
// bytes (after the header), length.
type location struct {
	pack   uint32
	offset int64
	length uint32
}

// locationBytes is the size of an encoded location, the value of an index
// entry.
const locationBytes = 4 + 8 + 4

func (l location) encode() []byte {
	b := make([]byte, 0, locationBytes)
	b = binary.BigEndian.AppendUint32(b, l.pack)
	b = binary.BigEndian.AppendUint64(b, uint64(l.offset))
	return binary.BigEndian.AppendUint32(b, l.length)
}

func decodeLocation(b []byte) (location, error) {
	if len(b) != locationBytes {
		return location{}, fmt.Errorf("chunk location of %d bytes, want %d", len(b), locationBytes)
	}
	return location{
		pack:   binary.BigEndian.Uint32(b),
		offset: int64(binary.BigEndian.Uint64(b[4:])),
		length: binary.BigEndian.Uint32(b[12:]),
	}, nil
}

// packs is the set of pack files of one store.
type packs struct {
	dir string

	// mu guards everything below. Reads hold it shared; appends, syncs,
	// rotation and removal hold it exclusively.
	mu      sync.RWMutex
	files   map[uint32]*os.File // open for reading, by pack id
	cur     *os.File            // the pack being written
	curID   uint32
	curSize int64 // bytes appended to cur, buffered ones included
	flushed int64 // bytes of cur handed to the kernel
	started int64 // bytes of cur whose writeback was started
	w       *bufio.Writer
	dirty   map[uint32]*os.File // written since the last sync
	// lost holds packs whose unsynced writes may not have reached the
	// disk: a write or fsync failed. Their chunks not yet indexed must be
	// forgotten (takeLost), not trusted on a later, "successful" fsync.
	lost map[uint32]struct{}
	// broken is set when no new pack could be started after a failure:
	// every append fails until the store is reopened.
	broken error
	closed bool
}

func packName(id uint32) string { return fmt.Sprintf("%08d.pack", id) }

// openPacks opens the pack directory of a store and starts a new pack after
// the highest one there: a pack is never appended to after a restart, so a
// torn tail of an interrupted write is only garbage.
func openPacks(storeDir string) (*packs, error) {
	dir := filepath.Join(storeDir, packsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ids, err := packIDs(dir)
	if err != nil {
		return nil, err
	}
	// The packs directory entry must be durable before anything in it is.
	if err := syncPath(storeDir); err != nil {
		return nil, err
	}
	p := &packs{dir: dir, files: make(map[uint32]*os.File), dirty: make(map[uint32]*os.File), lost: make(map[uint32]struct{})}
	next := uint32(1)
	if len(ids) > 0 {
		next = ids[len(ids)-1] + 1
	}
	if err := p.startPack(next); err != nil {
		return nil, err
	}
	return p, nil
}

// packIDs lists the pack ids in dir, ascending.
func packIDs(dir string) ([]uint32, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ids []uint32
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".pack")
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(name, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s: unexpected file %s", dir, e.Name())
		}
		ids = append(ids, uint32(id))
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

// startPack makes a new, empty pack the one being written. Called with mu
// held (or before p is shared).
func (p *packs) startPack(id uint32) error {
	f, err := os.OpenFile(filepath.Join(p.dir, packName(id)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("start pack: %w", err)
	}
	// The directory entry must be durable before any index entry points
	// into the file.
	if err := syncPath(p.dir); err != nil {
		f.Close()
		return fmt.Errorf("start pack: %w", err)
	}
	p.cur, p.curID, p.curSize, p.flushed, p.started = f, id, 0, 0, 0
	p.files[id] = f
	if p.w == nil {
		p.w = bufio.NewWriterSize(f, packWriteBuffer)
	} else {
		p.w.Reset(f)
	}
	return nil
}

// append writes a chunk to the pack being written and returns where it is.
// It is durable only after sync.
func (p *packs) append(id distribution.ChunkID, encoded []byte) (location, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return location{}, errClosed
	}
	if p.broken != nil {
		return location{}, p.broken
	}
	if p.curSize >= packFileBytes {
		if err := p.rotate(); err != nil {
			return location{}, err
		}
	}
	var header [packHeaderBytes]byte
	copy(header[:], id[:])
	binary.BigEndian.PutUint32(header[len(id):], uint32(len(encoded)))
	if _, err := p.w.Write(header[:]); err != nil {
		return location{}, p.failed(err)
	}
	if _, err := p.w.Write(encoded); err != nil {
		return location{}, p.failed(err)
	}
	loc := location{pack: p.curID, offset: p.curSize + int64(packHeaderBytes), length: uint32(len(encoded))}
	p.curSize += int64(packHeaderBytes + len(encoded))
	p.flushed = p.curSize - int64(p.w.Buffered())
	p.dirty[p.curID] = p.cur
	if p.flushed-p.started >= writebackEvery {
		startWriteback(p.cur, p.started, p.flushed-p.started)
		p.started = p.flushed
	}
	return loc, nil
}

// failed abandons the pack being written after a failed write or sync,
// whose tail is unknown, and starts the next pack. Called with mu held.
func (p *packs) failed(err error) error {
	old := p.curID
	p.lost[old] = struct{}{}
	delete(p.dirty, old)
	// Readers of its durable chunks reopen it read-only.
	p.cur.Close()
	delete(p.files, old)
	if serr := p.startPack(old + 1); serr != nil {
		p.broken = fmt.Errorf("pack store unusable until reopened: %w", serr)
	}
	return fmt.Errorf("write pack %s: %w", packName(old), err)
}

// takeLost returns the packs lost since the last call.
func (p *packs) takeLost() map[uint32]struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.lost) == 0 {
		return nil
	}
	lost := p.lost
	p.lost = make(map[uint32]struct{})
	return lost
}

// rotate syncs the pack being written and starts the next one. Called with
// mu held.
func (p *packs) rotate() error {
	if err := p.syncLocked(); err != nil {
		return err
	}
	return p.startPack(p.curID + 1)
}

// sync makes every append so far durable.
func (p *packs) sync() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errClosed
	}
	return p.syncLocked()
}

func (p *packs) syncLocked() error {
	if err := p.w.Flush(); err != nil {
		return p.failed(err)
	}
	p.flushed = p.curSize
	for id, f := range p.dirty {
		if err := f.Sync(); err != nil {
			// After a failed fsync the kernel may have dropped the pages
			// and a second fsync would report success: the pack's unsynced
			// chunks are lost, whatever a retry says.
			if id == p.curID {
				return p.failed(fmt.Errorf("sync: %w", err))
			}
			p.lost[id] = struct{}{}
			delete(p.dirty, id)
			return fmt.Errorf("sync pack %s: %w", packName(id), err)
		}
		delete(p.dirty, id)
	}
	return nil
}

// read returns a copy of the chunk at loc, checking that the pack holds that
// chunk there.
func (p *packs) read(id distribution.ChunkID, loc location) ([]byte, error) {
	p.mu.RLock()
	if loc.pack == p.curID && loc.offset+int64(loc.length) > p.flushed {
		// Still in the write buffer: hand it to the kernel first.
		p.mu.RUnlock()
		p.mu.Lock()
		err := p.w.Flush()
		if err == nil {
			p.flushed = p.curSize
		}
		p.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("chunk %s: write pack: %w", id.Short(), err)
		}
		p.mu.RLock()
	}
	defer p.mu.RUnlock()
	if p.closed {
		return nil, errClosed
	}
	f, err := p.file(loc.pack)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", id.Short(), err)
	}
	buf := make([]byte, packHeaderBytes+int(loc.length))
	if _, err := f.ReadAt(buf, loc.offset-int64(packHeaderBytes)); err != nil {
		return nil, fmt.Errorf("chunk %s: read pack %s at %d: %w", id.Short(), packName(loc.pack), loc.offset, err)
	}
	if [len(id)]byte(buf[:len(id)]) != id || binary.BigEndian.Uint32(buf[len(id):]) != loc.length {
		return nil, fmt.Errorf("%w: chunk %s: pack %s at %d holds another chunk", distribution.ErrChunkCorrupt, id.Short(), packName(loc.pack), loc.offset)
	}
	return buf[packHeaderBytes:], nil
}

// file returns an open handle of a pack. Called with mu held shared: a
// handle opened here is kept with a short exclusive section.
func (p *packs) file(id uint32) (*os.File, error) {
	if f, ok := p.files[id]; ok {
		return f, nil
	}
	f, err := os.Open(filepath.Join(p.dir, packName(id)))
	if err != nil {
		return nil, fmt.Errorf("open pack: %w", err)
	}
	// Keep one handle per pack; another reader may have opened it too.
	p.mu.RUnlock()
	p.mu.Lock()
	if have, ok := p.files[id]; ok {
		f.Close()
		f = have
	} else {
		p.files[id] = f
	}
	p.mu.Unlock()
	p.mu.RLock()
	return f, nil
}

// current returns the id of the pack being written.
func (p *packs) current() uint32 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.curID
}

// sizes returns the size of every pack file and the id of the one being
// written.
func (p *packs) sizes() (map[uint32]int64, uint32, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	ids, err := packIDs(p.dir)
	if err != nil {
		return nil, 0, err
	}
	sizes := make(map[uint32]int64, len(ids))
	for _, id := range ids {
		if id == p.curID {
			sizes[id] = p.curSize
			continue
		}
		fi, err := os.Stat(filepath.Join(p.dir, packName(id)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		sizes[id] = fi.Size()
	}
	return sizes, p.curID, nil
}

// rotateIf starts a new pack if the one being written is id, so that id can
// be compacted.
func (p *packs) rotateIf(id uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.curID != id {
		return nil
	}
	return p.rotate()
}

// remove deletes a pack that no index entry points into any more.
func (p *packs) remove(id uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if id == p.curID {
		return fmt.Errorf("remove pack %s: it is being written", packName(id))
	}
	if f, ok := p.files[id]; ok {
		f.Close()
		delete(p.files, id)
	}
	delete(p.dirty, id)
	if err := os.Remove(filepath.Join(p.dir, packName(id))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// close syncs and closes every pack.
func (p *packs) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	err := p.syncLocked()
	for _, f := range p.files {
		err = errors.Join(err, f.Close())
	}
	p.closed = true
	// An empty pack left by a store that wrote nothing is of no use.
	if p.curSize == 0 {
		err = errors.Join(err, os.Remove(filepath.Join(p.dir, packName(p.curID))))
	}
	return err
}

// syncPath fsyncs a file or directory by name.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}
