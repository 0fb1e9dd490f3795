// Package store is the durable memory of a TED node: the chunks it holds, the
// signed manifests of the revisions it has received or built, and the indexes
// that find them by distribution and by channel. It keeps the newest N
// revisions of each distribution and collects the chunks nothing kept refers
// to, so that disk use stays bounded.
//
// Badger (Open) is the implementation every daemon uses. Badger holds the
// manifests and every index, and where each chunk is; the chunk bytes
// themselves are appended to pack files beside it and read with pread, so
// neither a build nor serving chunks makes the process's memory grow with
// the data (badger's value log is memory-mapped). Packs that are mostly
// garbage are compacted by Prune. Chunks were first kept in badger's value
// log; bench/README.md has the measurements that moved them out.
//
// Memory (NewMemory)
// is a test double with the same behaviour, and package storetest holds the
// conformance suite both pass.
//
// Pending chunks. A chunk stored with PutChunk is pending until a revision
// that references it is added; Prune never deletes a pending chunk, because
// an upload or a build in this process is still putting together the
// revision that will need it. The pending set lives in memory only: after a
// restart nothing is pending, so the chunks of a build or a transfer that was
// interrupted are collected by the next Prune. A chunk that HasChunk reports
// is not pinned: if no kept revision references it, a concurrent Prune may
// collect it, and the AddRevision that relied on it fails with ErrIncomplete;
// fetching the missing chunks again and retrying is the remedy.
//
// The store must never hand out a manifest other than the exact bytes it was
// given (signatures cover those bytes), never make a revision visible before
// every chunk it references is stored, and never delete a chunk that a stored
// revision or a pending upload still needs. It checks neither signatures nor
// chunk contents: callers verify what comes from elsewhere (Trust.Verify,
// DecodeChunk) before storing it. It knows nothing of networks or schedules.
package store
