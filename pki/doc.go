// Package pki creates and loads the keys and certificates that TED nodes use:
// a private certificate authority, node certificates that bind a node's name,
// role (publisher, distributor, subscriber) and groups for mutual TLS, the
// CA's records (the index of issued certificates, the log of join tokens made
// and used), one-time join tokens signed by the CA, the CA's signed
// revocation list, and the ed25519 keys with which publishers sign manifests.
//
// It must never write a private key that anyone but its owner can read, not
// even for a moment: key files are created with mode 0600. It must never
// overwrite an existing key or certificate unless the caller asks for it, and
// it must never trust the system's root certificates: roles and groups are
// read only from certificates that chain to the TED CA the caller names. It
// must never write or quote a join token, which is a bearer secret, anywhere:
// records and errors name a token by its ID. It holds no state in memory and
// talks to no network; the transport decides what to do with what it loads.
package pki
