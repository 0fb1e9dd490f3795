package store

import (
	"errors"
	"fmt"
	"time"

	"ted/distribution"
)

// Errors of the store. Callers test them with errors.Is; the wrapping error
// names the distribution, revision, chunk or directory concerned.
var (
	// ErrNotFound: no such distribution, or no such revision of it.
	ErrNotFound = errors.New("not found")
	// ErrExists: the revision is already stored.
	ErrExists = errors.New("revision already stored")
	// ErrIncomplete: a revision references chunks the store does not hold.
	ErrIncomplete = errors.New("revision incomplete")
	// ErrLocked: another process (or another Open in this one) has the store.
	ErrLocked = errors.New("store is in use by another process")
	// ErrNotAStore: the directory holds something other than a TED store.
	ErrNotAStore = errors.New("not a TED store")
)

// Store is everything a node knows, kept durably. All methods are safe for
// concurrent use.
type Store interface {
	// Chunk returns a copy of an encoded chunk, or an error wrapping
	// distribution.ErrChunkMissing.
	distribution.ChunkSource
	// PutChunk stores an encoded chunk without checking it (see the package
	// documentation) and marks it pending; storing a chunk twice is harmless.
	distribution.ChunkSink

	// AddRevision stores a signed manifest; m is its decoded, already
	// verified content. Every chunk m references must be stored already
	// (else ErrIncomplete, and nothing is written). ErrExists if the
	// revision is stored. The manifest and its index entries appear
	// together or not at all, and are durable when AddRevision returns. The
	// revision's chunks stop being pending.
	AddRevision(s *distribution.Signed, m *distribution.Manifest) (RevisionInfo, error)
	// Signed returns a revision's envelope exactly as it was added; rev 0
	// means the latest revision.
	Signed(name string, rev uint64) (*distribution.Signed, error)
	// Revisions returns the stored revisions of a distribution, oldest
	// first; ErrNotFound if there are none.
	Revisions(name string) ([]RevisionInfo, error)
	// Latest returns the newest stored revision; ErrNotFound if none.
	Latest(name string) (RevisionInfo, error)
	// Distributions returns the names of the stored distributions, sorted.
	Distributions() ([]string, error)
	// ChannelRevisions returns every stored revision published into channel,
	// ordered by name, then revision; none (and no error) for a channel
	// nothing was published into.
	ChannelRevisions(channel string) ([]RevisionInfo, error)
	// Prune keeps the newest keep (>= 1) revisions of name and deletes the
	// others, then deletes every chunk that no remaining revision of any
	// distribution references and that is not pending, and gives the space
	// back to the file system.
	Prune(name string, keep int) (PruneResult, error)
	// MissingChunks returns those of ids the store does not hold, in the
	// order of ids: one lookup of many, cheaper than HasChunk for each.
	MissingChunks(ids []distribution.ChunkID) ([]distribution.ChunkID, error)
	// RepairChunk replaces a stored chunk whose bytes were found corrupt
	// with a good copy, which it checks against id first
	// (distribution.ErrChunkCorrupt if it does not match).
	RepairChunk(id distribution.ChunkID, encoded []byte) error
	// Sync makes every chunk put so far durable, so a process killed
	// afterwards finds them on restart: a receiver checkpoints with it
	// during a long transfer, so it need not fetch them again.
	Sync() error
	// Usage counts what the store holds.
	Usage() (Usage, error)
	// Close releases the store. It is idempotent; every other method fails
	// after it.
	Close() error
}

// RevisionInfo is the index entry of a stored revision: what a listing
// shows without decoding the manifest.
type RevisionInfo struct {
	Name     string            `json:"name"`
	Revision uint64            `json:"revision"`
	Version  string            `json:"version"`
	Channels []string          `json:"channels"`
	Kind     distribution.Kind `json:"kind"`
	// Files and Bytes count regular files and their plain bytes.
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
	// Chunks counts the distinct chunks the revision references.
	Chunks  int       `json:"chunks"`
	Created time.Time `json:"created"`
	KeyID   string    `json:"key_id"`
}

// PruneResult says what a Prune removed.
type PruneResult struct {
	// RemovedRevisions lists the deleted revisions, oldest first.
	RemovedRevisions []uint64
	// RemovedChunks counts the deleted chunks, of every distribution.
	RemovedChunks int
	// FreedBytes is the encoded size of the deleted chunks.
	FreedBytes int64
}

// Usage counts what a store holds.
type Usage struct {
	Distributions, Revisions, Chunks int
	// ChunkBytes is the encoded size of the stored chunks.
	ChunkBytes int64
	// DiskBytes is the space the store takes on disk (0 in memory).
	DiskBytes int64
}

// CheckFree returns an error when taking need more bytes on the file
// system of dir would leave less than floor free (floor 0: no floor). A
// node checks it before receiving, so it never fills its disk.
func CheckFree(dir string, floor, need int64) error {
	if floor <= 0 {
		return nil
	}
	free, err := FreeBytes(dir)
	if err != nil {
		return err
	}
	if free-need < floor {
		return fmt.Errorf("short of disk: about %d bytes needed, %d free in %s, floor min_free_disk %d", need, free, dir, floor)
	}
	return nil
}
