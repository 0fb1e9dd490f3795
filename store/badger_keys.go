package store

import (
	"bytes"
	"encoding/binary"

	"ted/distribution"
)

// Badger key layout. Names and channels contain no NUL (ValidName), so NUL
// separates them, and a NUL sorts before every byte a name may hold: keys
// order by name, then by revision (big-endian), as listings want.
//
//	c/ID                 where the chunk is: pack, offset, length (packs.go);
//	                     small, so it stays in the LSM tree, and Usage and
//	                     Prune never read chunk bytes
//	r/NAME\0REV          RevisionInfo as JSON
//	m/NAME\0REV PART     Signed.Encode(), in parts of at most partBytes
//	k/NAME\0REV PART     the distinct chunk ids the revision references, in
//	                     parts: what Prune marks, without decoding manifests
//	h/CHANNEL\0NAME\0REV empty: the channel index
//	f/flush              a sentinel that reclaim writes and drops to flush
//	                     the memtable
const (
	prefixChunk    = 'c'
	prefixRevision = 'r'
	prefixManifest = 'm'
	prefixRefs     = 'k'
	prefixChannel  = 'h'
	prefixFlush    = 'f'
)

// partBytes bounds one value of a manifest or reference list. Badger refuses
// a value larger than its value log file, and a manifest may reach
// distribution.MaxManifestBytes; a multiple of the id size keeps every part
// of a reference list whole ids.
const partBytes = 4 << 20

func prefix(p byte) []byte { return []byte{p, '/'} }

func chunkKey(p byte, id distribution.ChunkID) []byte {
	return append(prefix(p), id[:]...)
}

// revisionKey is p/NAME\0REV; with a part number appended it names one part
// of a record split by parts.
func revisionKey(p byte, name string, rev uint64) []byte {
	k := append(prefix(p), name...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, rev)
}

// namePrefix is the common prefix of every revision of name under p.
func namePrefix(p byte, name string) []byte {
	return append(append(prefix(p), name...), 0)
}

func partKey(base []byte, part uint32) []byte {
	return binary.BigEndian.AppendUint32(bytes.Clone(base), part)
}

func channelKey(channel, name string, rev uint64) []byte {
	k := append(prefix(prefixChannel), channel...)
	k = append(k, 0)
	k = append(k, name...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, rev)
}

// parseNameRev splits NAME\0REV, what follows a revision or channel prefix.
func parseNameRev(b []byte) (name string, rev uint64, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i <= 0 || len(b)-i-1 != 8 {
		return "", 0, false
	}
	return string(b[:i]), binary.BigEndian.Uint64(b[i+1:]), true
}

func chunkIDOf(key []byte) (distribution.ChunkID, bool) {
	var id distribution.ChunkID
	if len(key) != 2+len(id) {
		return id, false
	}
	copy(id[:], key[2:])
	return id, true
}
