package distribution

// Limits every manifest must respect. They bound what a hostile or broken
// publisher (or a relay in between) can make a node allocate or write, and are
// checked by Validate before anything is stored or extracted.
const (
	// MaxManifestBytes bounds the encoded manifest: a 1,000,000-entry tree
	// with one chunk per file needs about 100 MiB.
	MaxManifestBytes = 256 << 20
	// MaxEntries bounds the number of files, directories and symlinks.
	MaxEntries = 1_000_000
	// MaxPathBytes bounds a whole relative path (Linux PATH_MAX).
	MaxPathBytes = 4096
	// MaxNameBytes bounds one path element (Linux NAME_MAX).
	MaxNameBytes = 255
	// MaxPathDepth bounds directory nesting.
	MaxPathDepth = 256
	// MaxSymlinkTargetBytes bounds a symlink's target.
	MaxSymlinkTargetBytes = 4096
	// MaxFileBytes bounds one file (64 GiB: a VM image, not a disk).
	MaxFileBytes = 64 << 30
	// MaxChunksPerFile follows from MaxFileBytes and the chunker's minimum
	// size, so no file within MaxFileBytes can need more; it is also the
	// decoder's array limit.
	MaxChunksPerFile = MaxFileBytes / ChunkMinBytes
	// MaxTotalBytes bounds the content of one revision (1 TiB). In practice
	// MaxManifestBytes binds first: about 36 bytes per chunk reference.
	MaxTotalBytes = 1 << 40
	// MaxNameLen bounds a distribution or channel name.
	MaxNameLen = 128
	// MaxDependencies bounds the requires list.
	MaxDependencies = 256
	// MaxActions bounds each of the pre and post action lists.
	MaxActions = 64
	// MaxActionBytes bounds one action command line.
	MaxActionBytes = 8192
	// MaxChannels bounds the channels a revision is published into.
	MaxChannels = 64
	// MaxEncodedChunkBytes bounds a stored or transmitted chunk: the largest
	// plain chunk plus the codec byte (compressed chunks are only kept when
	// smaller than the plain bytes).
	MaxEncodedChunkBytes = ChunkMaxBytes + 1
)
