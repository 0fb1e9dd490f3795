// Package swpkg compiles software packages and checks their prerequisites on
// a server.
//
// A spec (.spk, YAML) names a package, its version, what it requires, its
// package-level prerequisites and its components in install order; each
// component has a source folder, a place under the subscriber's root (to),
// its own prerequisites and pre, post and undo commands. ParseSpec reads a
// spec strictly, Compile turns it into one .cpk file and Open verifies and
// unpacks a .cpk.
//
// A .cpk is a deterministic tar stream (ustar, or PAX where a name needs it;
// entries sorted by path, modification times zero, no owners, permission
// bits kept) holding, in order:
//
//	package.cbor        the descriptor: Package in canonical CBOR, at most 1 MiB
//	components/NAME/... each component's directories, regular files and
//	                    symlinks whose targets stay inside components/NAME
//	scripts/...         the package's scripts, under the same rules
//	SHA256              hex SHA-256 of every byte of the stream before this
//	                    entry's header
//
// Open refuses a file that is truncated, altered, has a missing, extra or
// duplicate entry, a path outside those places, an invalid descriptor, a
// component without its folder, or a special file. It never writes outside
// the folder it unpacks into, and writes nothing for a file whose digest does
// not match.
//
// Prerequisites are checked through an Env, so tests can fake the server;
// Check must never change the server, beyond what a command prerequisite
// itself does.
package swpkg
