// Package distribution is TED's model of what travels: revisions of a
// distribution, described by a signed manifest and carried as content-defined,
// content-addressed chunks.
//
// It builds a revision from a directory tree (chunking, hashing, compressing),
// encodes the manifest canonically, signs and verifies it with ed25519, checks
// every manifest against the safety rules and limits in limits.go, and
// materialises a revision back into a directory.
//
// It must never write a byte for a manifest that has not passed Validate, never
// follow a symlink while writing, and never trust a chunk whose SHA-256 does not
// match its id. It knows nothing of storage engines or networks: chunks come and
// go through the small ChunkSource and ChunkSink interfaces.
package distribution
