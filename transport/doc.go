// Package transport carries TED's wire protocol between two nodes: the
// session and stream abstraction, framing, the message types, identities and
// roles from certificates, and chunk serving and fetching.
//
// The protocol does not know about QUIC. It runs over a Session, which opens
// and accepts Streams; NewPipe connects two sessions in memory (over
// net.Pipe) for tests, and the QUIC adapter (quic_listen.go, quic_dial.go)
// is the one used in production. Identity is the peer's certificate: its
// common name is the node name and the role is bound into it by pki.Issue.
//
// Every frame read from a peer is bounded before it is allocated, and every
// message is validated as it is decoded: a peer can make a read fail with an
// error naming it, never make this process allocate without bound or panic.
//
// This package imports distribution and pki (for the role extension), and
// nothing of the daemons.
package transport
