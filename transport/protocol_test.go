package transport

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"ted/distribution"
	"ted/pki"
	"ted/store"
)

// The two ends of every pipe in these tests: a child dials its parent.
var (
	childID  = Identity{Name: "child-1", Role: pki.RoleSubscriber}
	parentID = Identity{Name: "dist-1", Role: pki.RoleDistributor}
)

// waitLimit bounds every wait on another goroutine: a hang fails the test
// that caused it instead of the whole run.
const waitLimit = 10 * time.Second

var discardLog = slog.New(slog.DiscardHandler)

// async runs f in a goroutine and delivers its result.
func async[T any](f func() T) <-chan T {
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	return ch
}

// await returns what ch delivers, failing the test after waitLimit.
func await[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("nothing within %v", waitLimit)
		panic("unreachable")
	}
}

// awaitInCleanup is await for cleanups, which must not stop early: the
// cleanups registered before this one still have to run.
func awaitInCleanup[T any](t *testing.T, ch <-chan T, what string) (T, bool) {
	t.Helper()
	select {
	case v := <-ch:
		return v, true
	case <-time.After(waitLimit):
		t.Errorf("%s did not end within %v", what, waitLimit)
		var zero T
		return zero, false
	}
}

// newSessions connects a child to its parent in memory, until the test ends.
func newSessions(t *testing.T) (child, parent Session) {
	t.Helper()
	child, parent = NewPipe(childID, parentID)
	t.Cleanup(func() {
		child.Close(nil)
		parent.Close(nil)
	})
	return child, parent
}

// streamPair opens one stream from child to parent.
func streamPair(t *testing.T) (child, parent Stream) {
	t.Helper()
	cs, ps := newSessions(t)
	type opened struct {
		st  Stream
		err error
	}
	open := async(func() opened {
		st, err := cs.OpenStream(t.Context())
		return opened{st, err}
	})
	parent, err := ps.AcceptStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	o := await(t, open)
	if o.err != nil {
		t.Fatal(o.err)
	}
	return o.st, parent
}

// signedRevision builds and signs a small revision of a real tree.
func signedRevision(t testing.TB) (*distribution.Signed, ed25519.PublicKey) {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{
		"README":      []byte("read me\n"),
		"bin/tool":    bytes.Repeat([]byte("machine code "), 20_000),
		"etc/a.conf":  []byte("listen = 8080\n"),
		"share/empty": nil,
	}
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opts := distribution.BuildOptions{Name: "app", Revision: 3, Version: "1.2.0",
		Channels: []string{"stable"}, Created: time.Unix(1_700_000_000, 0)}
	m, _, err := distribution.BuildDir(context.Background(), dir, opts, store.NewMemory())
	if err != nil {
		t.Fatal(err)
	}
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	s, err := distribution.Sign(m, key)
	if err != nil {
		t.Fatal(err)
	}
	return s, key.Public().(ed25519.PublicKey)
}

// sampleMessages returns one valid message of every type, and some with
// every optional field set or left out.
func sampleMessages(t testing.TB) []Message {
	t.Helper()
	signed, _ := signedRevision(t)
	plain := bytes.Repeat([]byte("chunk "), 1000)
	id := distribution.SumChunk(plain)
	return []Message{
		&Hello{Name: "child-1", Agent: "ted/0.1", Channels: []string{"stable", "beta"}},
		&Hello{Name: "child-1", Agent: "ted/0.1"},
		&Welcome{Name: "dist-1", Agent: "ted/0.1"},
		&Error{Code: CodeRollback, Message: "app 3 is older than app 4"},
		&Offer{Signed: signed},
		&Status{Role: "subscriber", ActiveNode: "node-a", Revisions: []RevisionState{
			{Name: "app", Revision: 3, Version: "1.2.0", State: "receiving", Chunks: 10, HaveChunks: 4},
			{Name: "db", Revision: 1, Version: "9", State: "blocked", Reason: "needs app >= 4"},
			{Name: "web", Revision: 7, Version: "2", State: "failed", Error: "disk full"},
		}},
		&Status{Role: "distributor"},
		&Result{Name: "app", Revision: 3, FetchedChunks: 12, FetchedBytes: 1 << 20},
		&Result{Name: "app", Revision: 3, AlreadyStored: true},
		&Want{IDs: []distribution.ChunkID{id, {1}, {2, 3}}},
		&Chunk{ID: id, Data: distribution.EncodeChunk(plain)},
		&Missing{ID: id, Error: &Error{Code: CodeNotFound, Message: "chunk missing"}},
		&Revocations{CRL: []byte("a DER revocation list, checked by the receiver")},
		&Status{Role: "subscriber", Problem: "below the disk floor"},
		&Subtree{Full: true, Count: 2, Digest: 12345, Nodes: []NodeState{
			{Name: "web-01", Parent: "dist-2", Role: "subscriber", Agent: "0.9.0", Channels: []string{"stable"}, Connected: true,
				Revisions: []RevisionState{{Name: "app", Revision: 3, Version: "1.2.0", State: "extracted"}}},
			{Name: "web-02", Parent: "dist-2", Role: "subscriber", LastSeen: 1700000000000, Problem: "no parent reachable"},
		}},
		&Subtree{Count: 1, Digest: 7, Gone: []string{"web-03"}},
		&Waves{Rollouts: []Rollout{{Name: "ted-linux-amd64", Revision: 4, Canary: "5%", Chosen: "web-07"},
			{Name: "app", Revision: 9, Canary: "web-0*", Stopped: "1 failed in the first wave"}, {Name: "db", Revision: 2, Canary: "web-01", Open: true}}},
		&Waves{},
	}
}

// sameMessage compares messages; an offer by its envelope.
func sameMessage(a, b Message) bool {
	if oa, ok := a.(*Offer); ok {
		ob, ok := b.(*Offer)
		return ok && bytes.Equal(oa.Signed.Encode(), ob.Signed.Encode())
	}
	return reflect.DeepEqual(a, b)
}

func TestMessagesRoundTrip(t *testing.T) {
	// A chunk at the frame limit must pass, so the limit is not off by one.
	big := &Chunk{ID: distribution.ChunkID{9}, Data: make([]byte, distribution.MaxEncodedChunkBytes)}
	messages := append(sampleMessages(t), big)
	seen := map[msgType]bool{}
	for _, m := range messages {
		seen[m.msgType()] = true
		t.Run(m.msgType().String(), func(t *testing.T) {
			newConn := NewControlConn
			switch m.(type) {
			case *Want, *Chunk, *Missing:
				newConn = NewChunkConn
			}
			cst, pst := streamPair(t)
			sender, receiver := newConn(cst, parentID.Name), newConn(pst, childID.Name)
			sent := async(func() error { return sender.Send(m) })
			got, err := receiver.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if err := await(t, sent); err != nil {
				t.Fatal(err)
			}
			if !sameMessage(got, m) {
				t.Errorf("received %#v, sent %#v", got, m)
			}
			// Closing between messages is a clean end.
			if err := sender.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := receiver.Receive(); err != io.EOF {
				t.Errorf("receive after close: %v, want io.EOF", err)
			}
		})
	}
	for typ := typeHello; typ <= typeMissing; typ++ {
		if !seen[typ] {
			t.Errorf("no sample of %s", typ)
		}
	}
}

func TestOfferArrivesVerifiable(t *testing.T) {
	signed, pub := signedRevision(t)
	cst, pst := streamPair(t)
	sender, receiver := NewControlConn(cst, parentID.Name), NewControlConn(pst, childID.Name)
	sent := async(func() error { return sender.Send(&Offer{Signed: signed}) })
	m, err := receiver.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if err := await(t, sent); err != nil {
		t.Fatal(err)
	}
	got, err := distribution.NewTrust(pub).Verify(m.(*Offer).Signed)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "app" || got.Revision != 3 {
		t.Errorf("offer of %s %d, want app 3", got.Name, got.Revision)
	}
}

func TestSendRefusesOversizedMessage(t *testing.T) {
	cst, _ := streamPair(t)
	c := NewChunkConn(cst, parentID.Name)
	// Nothing reads the other end: a Send that got as far as the stream
	// would block, so this also shows the check comes first.
	err := c.Send(&Chunk{ID: distribution.ChunkID{1}, Data: make([]byte, distribution.MaxEncodedChunkBytes+1)})
	if err == nil || !strings.Contains(err.Error(), "frame limit") {
		t.Errorf("send of an oversized chunk: %v", err)
	}
	if err := c.Send(&Offer{}); err == nil {
		t.Error("send of an offer without a revision succeeded")
	}
}

// frameOf returns the frame of a message of type typ with body.
func frameOf(typ msgType, body []byte) []byte {
	return append(append(frameHeaderOf(len(body)+1), byte(typ)), body...)
}

// frameHeaderOf returns the header of a frame of n bytes.
func frameHeaderOf(n int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(n)) }

func mustCBOR(t *testing.T, v any) []byte {
	t.Helper()
	b, err := encMode.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cborText encodes a text string shorter than 24 bytes.
func cborText(s string) []byte { return append([]byte{0x60 + byte(len(s))}, s...) }

func TestReceiveRefusesMalformedFrames(t *testing.T) {
	enc, _ := offerCodecs()
	// Hand-made CBOR: a map of n pairs is 0xa0+n, a short text 0x60+len.
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	raw := func(b ...byte) []byte { return b }
	name, agent := cborText("child-1"), cborText("t")
	hello := cat(raw(0xa2, 0x01), name, raw(0x02), agent)
	if _, err := decodeMessage(typeHello, hello); err != nil {
		t.Fatalf("the hello the cases start from is refused: %v", err)
	}
	cases := []struct {
		name  string
		chunk bool // on a chunk stream, else the control stream
		raw   []byte
		// open leaves the stream open after raw, so a reader that waits
		// for more would hang.
		open bool
		want error
	}{
		{name: "zero length", raw: frameHeaderOf(0), open: true, want: ErrProtocol},
		{name: "over the chunk limit", chunk: true, raw: frameHeaderOf(maxChunkFrame + 1), open: true, want: ErrProtocol},
		{name: "over the control limit", raw: frameHeaderOf(maxControlFrame + 1), open: true, want: ErrProtocol},
		{name: "largest length", raw: frameHeaderOf(1<<32 - 1), open: true, want: ErrProtocol},
		{name: "type 0", raw: frameOf(0, hello), want: ErrProtocol},
		{name: "unknown type", raw: frameOf(200, hello), want: ErrProtocol},
		{name: "keys out of order", want: ErrProtocol,
			raw: frameOf(typeHello, cat(raw(0xa2, 0x02), agent, raw(0x01), name))},
		{name: "long form of a short string", want: ErrProtocol,
			raw: frameOf(typeHello, cat(raw(0xa2, 0x01, 0x78, 7), []byte("child-1"), raw(0x02), agent))},
		{name: "long form of a small int", want: ErrProtocol,
			raw: frameOf(typeResult, cat(raw(0xa4, 0x01), cborText("app"), raw(0x02, 0x1a, 0, 0, 0, 5, 0x03, 0x00, 0x04, 0x00)))},
		{name: "indefinite length map", want: ErrProtocol,
			raw: frameOf(typeHello, cat(raw(0xbf, 0x01), name, raw(0x02), agent, raw(0xff)))},
		{name: "duplicate key", want: ErrProtocol,
			raw: frameOf(typeHello, cat(raw(0xa3, 0x01), name, raw(0x02), agent, raw(0x01), cborText("x")))},
		{name: "trailing bytes", want: ErrProtocol, raw: frameOf(typeHello, cat(hello, raw(0x00)))},
		{name: "unknown field", want: ErrProtocol,
			raw: frameOf(typeHello, mustCBOR(t, map[int]string{1: "child-1", 2: "t", 9: "x"}))},
		{name: "wrong field type", want: ErrProtocol,
			raw: frameOf(typeHello, mustCBOR(t, map[int]any{1: 5, 2: "t"}))},
		{name: "invalid UTF-8", want: ErrProtocol,
			raw: frameOf(typeHello, mustCBOR(t, map[int]string{1: "child-\xff", 2: "t"}))},
		{name: "name too long", want: ErrProtocol,
			raw: frameOf(typeHello, mustCBOR(t, &Hello{Name: strings.Repeat("n", distribution.MaxNameLen+1)}))},
		{name: "bad channel", want: ErrProtocol,
			raw: frameOf(typeHello, mustCBOR(t, &Hello{Name: "child-1", Channels: []string{"../etc"}}))},
		{name: "want of no ids", chunk: true, want: ErrProtocol, raw: frameOf(typeWant, mustCBOR(t, &Want{}))},
		{name: "want of an empty list", chunk: true, want: ErrProtocol,
			raw: frameOf(typeWant, mustCBOR(t, &Want{IDs: []distribution.ChunkID{}}))},
		{name: "want of too many ids", chunk: true, want: ErrProtocol,
			raw: frameOf(typeWant, mustCBOR(t, &Want{IDs: make([]distribution.ChunkID, MaxWantIDs+1)}))},
		{name: "want of a short id", chunk: true, want: ErrProtocol,
			raw: frameOf(typeWant, mustCBOR(t, map[int][][]byte{1: {make([]byte, 31)}}))},
		{name: "chunk without data", chunk: true, want: ErrProtocol,
			raw: frameOf(typeChunk, make([]byte, len(distribution.ChunkID{})))},
		{name: "missing without error", chunk: true, want: ErrProtocol,
			raw: frameOf(typeMissing, mustCBOR(t, &Missing{ID: distribution.ChunkID{1}}))},
		{name: "error text too long", want: ErrProtocol,
			raw: frameOf(typeError, mustCBOR(t, &Error{Code: CodeInternal, Message: strings.Repeat("x", maxText+1)}))},
		{name: "status of a bad name", want: ErrProtocol,
			raw: frameOf(typeStatus, mustCBOR(t, &Status{Role: "subscriber", Revisions: []RevisionState{{Name: "a b"}}}))},
		{name: "offer of garbage", want: ErrProtocol, raw: frameOf(typeOffer, []byte("this is not zstd at all"))},
		{name: "offer of an empty body", want: ErrProtocol, raw: frameOf(typeOffer, nil)},
		{name: "offer of a bad envelope", want: ErrProtocol,
			raw: frameOf(typeOffer, enc.EncodeAll([]byte{0x83, 0x40, 0x60, 0x40}, nil))},
		{name: "truncated header", raw: []byte{0, 0}, want: io.ErrUnexpectedEOF},
		{name: "truncated body", raw: frameOf(typeHello, hello)[:frameHeader+4], want: io.ErrUnexpectedEOF},
		{name: "truncated chunk", chunk: true, want: io.ErrUnexpectedEOF,
			raw: frameOf(typeChunk, make([]byte, 100))[:50]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cst, pst := streamPair(t)
			receiver := NewControlConn(pst, childID.Name)
			if tc.chunk {
				receiver = NewChunkConn(pst, childID.Name)
			}
			written := async(func() error {
				if _, err := cst.Write(tc.raw); err != nil {
					return err
				}
				if tc.open {
					return nil
				}
				return cst.Close()
			})
			type received struct {
				m   Message
				err error
			}
			got := await(t, async(func() received {
				m, err := receiver.Receive()
				return received{m, err}
			}))
			if !errors.Is(got.err, tc.want) {
				t.Fatalf("received %#v, %v; want an error wrapping %v", got.m, got.err, tc.want)
			}
			if !strings.Contains(got.err.Error(), childID.Name) {
				t.Errorf("error %q does not name the peer %s", got.err, childID.Name)
			}
			receiver.Close() // ends a write the receiver refused to read
			await(t, written)
		})
	}
}

// TestReceiveDoesNotAllocateOversizedFrame checks that the limit is applied
// to the header, before the frame is allocated.
func TestReceiveDoesNotAllocateOversizedFrame(t *testing.T) {
	cst, pst := streamPair(t)
	receiver := NewControlConn(pst, childID.Name)
	written := async(func() error {
		_, err := cst.Write(frameHeaderOf(maxControlFrame + 1))
		return err
	})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := receiver.Receive()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("receive: %v, want ErrProtocol", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("refusing a frame header allocated %d bytes", n)
	}
	if err := await(t, written); err != nil {
		t.Fatal(err)
	}
}

func TestErrorCodes(t *testing.T) {
	// The first sentinel of a code is the one its errors unwrap to.
	first := map[Code]error{}
	for _, c := range codes {
		if _, ok := first[c.code]; !ok {
			first[c.code] = c.err
		}
	}
	for _, c := range codes {
		t.Run(c.err.Error(), func(t *testing.T) {
			err := fmt.Errorf("serve app 3: %w", c.err)
			wire := ErrorOf(err)
			if wire.Code != c.code {
				t.Errorf("code %d, want %d", wire.Code, c.code)
			}
			if wire.Message != err.Error() {
				t.Errorf("message %q, want %q", wire.Message, err.Error())
			}
			if !errors.Is(wire, first[c.code]) {
				t.Errorf("code %d does not unwrap to %v", c.code, first[c.code])
			}
			back := ErrorOf(remote("dist-1", wire))
			if *back != *wire {
				t.Errorf("an error passed on became %+v, want %+v", back, wire)
			}
		})
	}
	for _, code := range []Code{0, 10, 999, 65535} {
		if err := (&Error{Code: code}).Unwrap(); err != ErrInternal {
			t.Errorf("unknown code %d unwraps to %v, want ErrInternal", code, err)
		}
	}
	if got := ErrorOf(errors.New("disk on fire")).Code; got != CodeInternal {
		t.Errorf("a plain error has code %d, want %d", got, CodeInternal)
	}
	if got := ErrorOf(ErrStopping).Code; got != CodeUnavailable {
		t.Errorf("ErrStopping has code %d, want %d", got, CodeUnavailable)
	}
}

func TestErrorOfTextIsSendable(t *testing.T) {
	cases := []struct {
		name string
		err  error
	}{
		{"long", errors.New(strings.Repeat("x", 3*maxText))},
		{"long with multibyte runes", errors.New(strings.Repeat("€", maxText))},
		{"invalid UTF-8", fmt.Errorf("open %s: %w", "dir/\xff\xfe", ErrNotFound)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wire := ErrorOf(tc.err)
			if len(wire.Message) > maxText || !utf8.ValidString(wire.Message) {
				t.Errorf("message of %d bytes, valid UTF-8 %v", len(wire.Message), utf8.ValidString(wire.Message))
			}
			body, err := wire.appendBody(nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeMessage(typeError, body); err != nil {
				t.Errorf("the peer refuses it: %v", err)
			}
		})
	}
}

func TestErrorsIsAcrossTheWire(t *testing.T) {
	for _, c := range codes {
		t.Run(c.err.Error(), func(t *testing.T) {
			cst, pst := streamPair(t)
			sender, receiver := NewChunkConn(cst, parentID.Name), NewChunkConn(pst, childID.Name)
			sent := async(func() error { return sender.Send(ErrorOf(fmt.Errorf("chunk abc: %w", c.err))) })
			m, err := receiver.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if err := await(t, sent); err != nil {
				t.Fatal(err)
			}
			wire, ok := m.(*Error)
			if !ok {
				t.Fatalf("received %T", m)
			}
			// A missing chunk travels as not found, and arrives as that.
			want := c.err
			if want == distribution.ErrChunkMissing {
				want = ErrNotFound
			}
			got := remote(childID.Name, wire)
			if wire.Code != c.code || !errors.Is(got, want) {
				t.Errorf("received %v (code %d), want %v (code %d)", got, wire.Code, want, c.code)
			}
		})
	}
}

// handshakeResult is what ServerHello returns.
type handshakeResult struct {
	c     *Conn
	hello *Hello
	err   error
}

func serverHello(ctx context.Context, sess Session, check func(*Hello) error) <-chan handshakeResult {
	return async(func() handshakeResult {
		c, h, err := ServerHello(ctx, sess, &Welcome{Name: sess.(*pipeSession).self.Name, Agent: "ted/server"}, check)
		return handshakeResult{c, h, err}
	})
}

func acceptAll(*Hello) error { return nil }

func TestHandshake(t *testing.T) {
	for _, dialler := range []string{"child", "parent"} {
		t.Run(dialler+" dials", func(t *testing.T) {
			client, server := newSessions(t)
			if dialler == "parent" {
				client, server = server, client
			}
			hello := &Hello{Name: client.(*pipeSession).self.Name, Agent: "ted/client", Channels: []string{"stable"}}
			done := serverHello(t.Context(), server, acceptAll)
			cc, welcome, err := ClientHello(t.Context(), client, hello)
			if err != nil {
				t.Fatal(err)
			}
			res := await(t, done)
			if res.err != nil {
				t.Fatal(res.err)
			}
			if welcome.Name != client.Peer().Name || welcome.Agent != "ted/server" {
				t.Errorf("welcome %+v", welcome)
			}
			if !reflect.DeepEqual(res.hello, hello) {
				t.Errorf("server got hello %+v, want %+v", res.hello, hello)
			}
			// The control stream stays open both ways.
			sent := async(func() error { return res.c.Send(&Result{Name: "app", Revision: 1}) })
			if m, err := cc.Receive(); err != nil || m.msgType() != typeResult {
				t.Errorf("client received %v, %v", m, err)
			}
			if err := await(t, sent); err != nil {
				t.Fatal(err)
			}
			sent = async(func() error { return cc.Send(&Status{Role: "subscriber"}) })
			if m, err := res.c.Receive(); err != nil || m.msgType() != typeStatus {
				t.Errorf("server received %v, %v", m, err)
			}
			if err := await(t, sent); err != nil {
				t.Fatal(err)
			}
			cc.Close()
			res.c.Close()
		})
	}
}

func TestHandshakeRefusesNameNotInCertificate(t *testing.T) {
	client, server := newSessions(t)
	done := serverHello(t.Context(), server, func(*Hello) error {
		t.Error("check called for a hello under another name")
		return nil
	})
	_, _, err := ClientHello(t.Context(), client, &Hello{Name: "someone-else", Agent: "ted/client"})
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), parentID.Name) {
		t.Errorf("client: %v, want ErrUnauthorized naming %s", err, parentID.Name)
	}
	res := await(t, done)
	if !errors.Is(res.err, ErrUnauthorized) || !strings.Contains(res.err.Error(), "someone-else") {
		t.Errorf("server: %v, want ErrUnauthorized naming someone-else", res.err)
	}
}

func TestHandshakeCheckRefusalReachesClient(t *testing.T) {
	cases := []struct {
		name   string
		refuse error
		want   error
	}{
		{"unauthorised", fmt.Errorf("%w: channel %q is not for subscribers", ErrUnauthorized, "secret"), ErrUnauthorized},
		{"stopping", ErrStopping, ErrUnavailable},
		{"untrusted", fmt.Errorf("key 0123: %w", distribution.ErrUntrustedKey), distribution.ErrUntrustedKey},
		{"internal", errors.New("disk on fire"), ErrInternal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client, server := newSessions(t)
			done := serverHello(t.Context(), server, func(h *Hello) error { return tc.refuse })
			_, _, err := ClientHello(t.Context(), client, &Hello{Name: childID.Name, Agent: "ted/client"})
			if !errors.Is(err, tc.want) {
				t.Errorf("client: %v, want an error wrapping %v", err, tc.want)
			}
			if err == nil || !strings.Contains(err.Error(), tc.refuse.Error()) || !strings.Contains(err.Error(), parentID.Name) {
				t.Errorf("client: %v, want the reason %q from %s", err, tc.refuse, parentID.Name)
			}
			if res := await(t, done); !errors.Is(res.err, tc.refuse) {
				t.Errorf("server: %v, want %v", res.err, tc.refuse)
			}
		})
	}
}

// silentPeer plays the other end of a handshake that never answers, until
// the test ends.
type silentPeer func(ctx context.Context, sess Session)

func TestHandshakeTimesOut(t *testing.T) {
	const deadline = 100 * time.Millisecond
	never := func(ctx context.Context, _ Session) { <-ctx.Done() }
	acceptOnly := func(ctx context.Context, sess Session) {
		if st, err := sess.AcceptStream(ctx); err == nil {
			<-ctx.Done()
			st.Close()
		}
	}
	readOnly := func(ctx context.Context, sess Session) {
		if st, err := sess.AcceptStream(ctx); err == nil {
			_, _ = NewControlConn(st, "peer").Receive()
			<-ctx.Done()
			st.Close()
		}
	}
	openOnly := func(ctx context.Context, sess Session) {
		if st, err := sess.OpenStream(ctx); err == nil {
			<-ctx.Done()
			st.Close()
		}
	}
	cases := []struct {
		name   string
		server bool // the silent peer is the server, the client under test
		peer   silentPeer
	}{
		{"server never accepts", true, never},
		{"server never reads", true, acceptOnly},
		{"server never answers", true, readOnly},
		{"client never opens", false, never},
		{"client never speaks", false, openOnly},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client, server := newSessions(t)
			peerCtx, stopPeer := context.WithCancel(context.Background())
			var peer <-chan struct{}
			ctx, cancel := context.WithTimeout(t.Context(), deadline)
			defer cancel()
			var err error
			if tc.server {
				peer = async(func() struct{} { tc.peer(peerCtx, server); return struct{}{} })
				err = await(t, async(func() error {
					_, _, err := ClientHello(ctx, client, &Hello{Name: childID.Name})
					return err
				}))
			} else {
				peer = async(func() struct{} { tc.peer(peerCtx, client); return struct{}{} })
				err = await(t, serverHello(ctx, server, acceptAll)).err
			}
			stopPeer()
			await(t, peer)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("handshake: %v, want context.DeadlineExceeded", err)
			}
		})
	}
}

func TestHandshakeRefusesOtherFirstMessage(t *testing.T) {
	for _, first := range []Message{&Want{IDs: []distribution.ChunkID{{1}}}, &Welcome{Name: "child-1"}, &Status{Role: "subscriber"}} {
		t.Run(first.msgType().String(), func(t *testing.T) {
			client, server := newSessions(t)
			done := serverHello(t.Context(), server, acceptAll)
			st, err := client.OpenStream(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			c := NewControlConn(st, parentID.Name)
			defer c.Close()
			if err := c.Send(first); err != nil {
				t.Fatal(err)
			}
			m, err := c.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if e, ok := m.(*Error); !ok || e.Code != CodeProtocol {
				t.Errorf("answer %#v, want a protocol error", m)
			}
			if res := await(t, done); !errors.Is(res.err, ErrProtocol) {
				t.Errorf("server: %v, want ErrProtocol", res.err)
			}
		})
	}
}

func TestClientHelloRefusesBadAnswer(t *testing.T) {
	for _, answer := range []Message{&Welcome{Name: "impostor"}, &Status{Role: "distributor"}} {
		t.Run(answer.msgType().String(), func(t *testing.T) {
			client, server := newSessions(t)
			done := async(func() error {
				st, err := server.AcceptStream(t.Context())
				if err != nil {
					return err
				}
				c := NewControlConn(st, childID.Name)
				defer c.Close()
				if _, err := c.Receive(); err != nil {
					return err
				}
				return c.Send(answer)
			})
			_, _, err := ClientHello(t.Context(), client, &Hello{Name: childID.Name})
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), parentID.Name) {
				t.Errorf("client: %v, want ErrProtocol naming %s", err, parentID.Name)
			}
			if err := await(t, done); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// chunkSet is a set of distinct chunks and a store holding them.
type chunkSet struct {
	ids     []distribution.ChunkID
	encoded map[distribution.ChunkID][]byte
	store   *store.Memory
	bytes   int
}

// newChunkSet makes n distinct chunks: random bytes (stored raw), text
// (stored compressed), the empty chunk and some of the largest size.
func newChunkSet(t *testing.T, n int) *chunkSet {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("the quick brown fox jumps over lazy dogs while seven wizards quietly box jugs")
	set := &chunkSet{encoded: map[distribution.ChunkID][]byte{}, store: store.NewMemory()}
	add := func(plain []byte) {
		id := distribution.SumChunk(plain)
		if _, ok := set.encoded[id]; ok {
			return
		}
		enc := distribution.EncodeChunk(plain)
		set.ids = append(set.ids, id)
		set.encoded[id] = enc
		set.bytes += len(enc)
		if err := set.store.PutChunk(id, enc); err != nil {
			t.Fatal(err)
		}
	}
	add(nil)
	for i := 1; len(set.ids) < n; i++ {
		switch {
		case i%50 == 0:
			add(randomBytes(rng, distribution.ChunkMaxBytes))
		case i%2 == 0:
			add(randomBytes(rng, 1+rng.IntN(distribution.ChunkAvgBytes)))
		default:
			var text []byte
			size := 1 + rng.IntN(distribution.ChunkMaxBytes)
			for len(text) < size {
				text = append(append(text, words[rng.IntN(len(words))]...), ' ')
			}
			add(text[:size])
		}
	}
	codecs := map[byte]bool{}
	for _, enc := range set.encoded {
		codecs[enc[0]] = true
	}
	if len(codecs) < 2 {
		t.Fatalf("the chunks use %d codecs, want raw and compressed", len(codecs))
	}
	return set
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// checkStored checks that sink holds exactly the chunks of set, byte for byte.
func (set *chunkSet) checkStored(t *testing.T, sink distribution.ChunkSource) {
	t.Helper()
	for _, id := range set.ids {
		got, err := sink.Chunk(id)
		if err != nil {
			t.Fatalf("chunk %s: %v", id.Short(), err)
		}
		if !bytes.Equal(got, set.encoded[id]) {
			t.Fatalf("chunk %s stored as %d bytes that differ from the %d sent", id.Short(), len(got), len(set.encoded[id]))
		}
	}
}

// serveChunks runs ServeChunks on sess until the test ends.
func serveChunks(t *testing.T, sess Session, p ChunkProvider, served func(int)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := async(func() error { return ServeChunks(ctx, sess, p, served, discardLog) })
	t.Cleanup(func() {
		cancel()
		if err, ok := awaitInCleanup(t, done, "ServeChunks"); ok && err != nil {
			t.Errorf("ServeChunks: %v", err)
		}
	})
}

// countingSession counts the streams opened on it.
type countingSession struct {
	Session
	opened atomic.Int32
}

func (s *countingSession) OpenStream(ctx context.Context) (Stream, error) {
	s.opened.Add(1)
	return s.Session.OpenStream(ctx)
}

// counter counts calls per chunk, from any goroutine.
type counter struct {
	mu sync.Mutex
	n  map[distribution.ChunkID]int
}

func (c *counter) add(id distribution.ChunkID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[distribution.ChunkID]int{}
	}
	c.n[id]++
	return c.n[id]
}

func (c *counter) counts() map[distribution.ChunkID]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}

// checkOncePerChunk checks that counts holds every chunk of ids once.
func checkOncePerChunk(t *testing.T, what string, counts map[distribution.ChunkID]int, ids []distribution.ChunkID) {
	t.Helper()
	if len(counts) != len(ids) {
		t.Errorf("%s for %d chunks, want %d", what, len(counts), len(ids))
	}
	for _, id := range ids {
		if counts[id] != 1 {
			t.Errorf("%s %d times for chunk %s, want once", what, counts[id], id.Short())
		}
	}
}

func TestFetchStoresEveryChunkExactly(t *testing.T) {
	set := newChunkSet(t, 1000)
	cases := []struct {
		name    string
		opts    FetchOptions
		streams int32
	}{
		{"defaults", FetchOptions{}, int32(DefaultFetchOptions().Streams)},
		{"4 streams of 7", FetchOptions{Streams: 4, Batch: 7}, 4},
		{"one stream of whole wants", FetchOptions{Streams: 1, Batch: MaxWantIDs}, 1},
		{"more streams than batches", FetchOptions{Streams: 64, Batch: 100}, 10},
		{"oversized batch", FetchOptions{Batch: MaxWantIDs + 1}, int32(DefaultFetchOptions().Streams)},
		{"one id a want", FetchOptions{Streams: 3, Batch: 1}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			child, parent := newSessions(t)
			var served atomic.Int64
			serveChunks(t, parent, StoreProvider(set.store), func(n int) { served.Add(int64(n)) })
			counted := &countingSession{Session: child}
			var stored counter
			var storedBytes atomic.Int64
			opts := tc.opts
			opts.Stored = func(id distribution.ChunkID, n int) {
				stored.add(id)
				storedBytes.Add(int64(n))
			}
			opts.Corrupt = func(id distribution.ChunkID, err error) { t.Errorf("chunk %s corrupt: %v", id.Short(), err) }
			sink := store.NewMemory()
			if err := Fetch(t.Context(), counted, set.ids, sink, opts); err != nil {
				t.Fatal(err)
			}
			set.checkStored(t, sink)
			checkOncePerChunk(t, "stored", stored.counts(), set.ids)
			if storedBytes.Load() != int64(set.bytes) || served.Load() != int64(set.bytes) {
				t.Errorf("stored %d bytes and served %d, want %d", storedBytes.Load(), served.Load(), set.bytes)
			}
			if n := counted.opened.Load(); n != tc.streams {
				t.Errorf("%d streams opened, want %d", n, tc.streams)
			}
		})
	}
}

func TestFetchNothing(t *testing.T) {
	child, _ := newSessions(t)
	counted := &countingSession{Session: child}
	if err := Fetch(t.Context(), counted, nil, store.NewMemory(), FetchOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := counted.opened.Load(); n != 0 {
		t.Errorf("%d streams opened to fetch nothing", n)
	}
}

// flipped returns a copy of an encoded chunk with its last byte changed,
// checking that it no longer matches id.
func flipped(t *testing.T, id distribution.ChunkID, encoded []byte) []byte {
	t.Helper()
	b := slices.Clone(encoded)
	b[len(b)-1] ^= 0x01
	if _, err := distribution.DecodeChunk(id, b); !errors.Is(err, distribution.ErrChunkCorrupt) {
		t.Fatalf("flipping the last byte of chunk %s: %v, want ErrChunkCorrupt", id.Short(), err)
	}
	return b
}

func TestFetchRefetchesCorruptChunks(t *testing.T) {
	set := newChunkSet(t, 1000)
	bad := map[distribution.ChunkID][]byte{}
	var badIDs []distribution.ChunkID
	for i, id := range set.ids {
		if i%7 == 3 {
			bad[id] = flipped(t, id, set.encoded[id])
			badIDs = append(badIDs, id)
		}
	}
	var asked counter
	provider := ChunkProviderFunc(func(_ context.Context, id distribution.ChunkID) ([]byte, error) {
		if asked.add(id) == 1 && bad[id] != nil {
			return bad[id], nil
		}
		return set.store.Chunk(id)
	})
	child, parent := newSessions(t)
	serveChunks(t, parent, provider, nil)
	var stored, corrupt counter
	opts := FetchOptions{Streams: 4, Batch: 7,
		Stored: func(id distribution.ChunkID, _ int) { stored.add(id) },
		Corrupt: func(id distribution.ChunkID, err error) {
			if !errors.Is(err, distribution.ErrChunkCorrupt) {
				t.Errorf("chunk %s corrupt: %v, want ErrChunkCorrupt", id.Short(), err)
			}
			corrupt.add(id)
		},
	}
	sink := store.NewMemory()
	if err := Fetch(t.Context(), child, set.ids, sink, opts); err != nil {
		t.Fatal(err)
	}
	set.checkStored(t, sink)
	checkOncePerChunk(t, "stored", stored.counts(), set.ids)
	checkOncePerChunk(t, "corrupt", corrupt.counts(), badIDs)
	for id, n := range asked.counts() {
		want := 1
		if bad[id] != nil {
			want = 2 // the corrupt answer and the good one
		}
		if n != want {
			t.Errorf("chunk %s asked for %d times, want %d", id.Short(), n, want)
		}
	}
}

func TestFetchGivesUpOnChunkStillCorrupt(t *testing.T) {
	set := newChunkSet(t, 200)
	victim := set.ids[150]
	bad := flipped(t, victim, set.encoded[victim])
	for _, retries := range []int{0, 1, 5} {
		t.Run(fmt.Sprintf("%d retries", retries), func(t *testing.T) {
			var asked, corrupt counter
			provider := ChunkProviderFunc(func(_ context.Context, id distribution.ChunkID) ([]byte, error) {
				asked.add(id)
				if id == victim {
					return bad, nil
				}
				return set.store.Chunk(id)
			})
			child, parent := newSessions(t)
			serveChunks(t, parent, provider, nil)
			opts := FetchOptions{Streams: 4, Batch: 7, Retries: retries,
				Corrupt: func(id distribution.ChunkID, _ error) { corrupt.add(id) }}
			err := Fetch(t.Context(), child, set.ids, store.NewMemory(), opts)
			if !errors.Is(err, distribution.ErrChunkCorrupt) || !strings.Contains(err.Error(), victim.Short()) {
				t.Fatalf("fetch: %v, want ErrChunkCorrupt naming chunk %s", err, victim.Short())
			}
			want := retries + 1
			if retries == 0 {
				want = 3 + 1 // the default
			}
			if n := corrupt.counts()[victim]; n != want {
				t.Errorf("corrupt called %d times, want %d", n, want)
			}
			if n := asked.counts()[victim]; n != want {
				t.Errorf("asked %d times, want %d", n, want)
			}
		})
	}
}

func TestFetchReportsChunkPeerCannotServe(t *testing.T) {
	set := newChunkSet(t, 300)
	victim := set.ids[250]
	cases := []struct {
		name  string
		serve func(ctx context.Context, id distribution.ChunkID) ([]byte, error)
		want  error
	}{
		{"missing from the store", func(_ context.Context, id distribution.ChunkID) ([]byte, error) {
			if id == victim {
				return store.NewMemory().Chunk(id)
			}
			return set.store.Chunk(id)
		}, ErrNotFound},
		{"stopping", func(_ context.Context, id distribution.ChunkID) ([]byte, error) {
			if id == victim {
				return nil, ErrStopping
			}
			return set.store.Chunk(id)
		}, ErrUnavailable},
		{"failing", func(_ context.Context, id distribution.ChunkID) ([]byte, error) {
			if id == victim {
				return nil, errors.New("read error")
			}
			return set.store.Chunk(id)
		}, ErrInternal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			child, parent := newSessions(t)
			serveChunks(t, parent, ChunkProviderFunc(tc.serve), nil)
			err := Fetch(t.Context(), child, set.ids, store.NewMemory(), FetchOptions{Streams: 4, Batch: 7})
			if !errors.Is(err, tc.want) {
				t.Errorf("fetch: %v, want an error wrapping %v", err, tc.want)
			}
			if err == nil || !strings.Contains(err.Error(), victim.Short()) || !strings.Contains(err.Error(), parentID.Name) {
				t.Errorf("fetch: %v, want it to name chunk %s and %s", err, victim.Short(), parentID.Name)
			}
		})
	}
}

// blockingProvider serves set, except that asking for victim blocks until
// the serving ctx ends (like a pull-through whose parent is away); blocked
// is closed when it does.
func blockingProvider(set *chunkSet, victim distribution.ChunkID) (ChunkProvider, <-chan struct{}) {
	blocked := make(chan struct{})
	var once sync.Once
	return ChunkProviderFunc(func(ctx context.Context, id distribution.ChunkID) ([]byte, error) {
		if id == victim {
			once.Do(func() { close(blocked) })
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return set.store.Chunk(id)
	}), blocked
}

func TestFetchEndsWhenCancelled(t *testing.T) {
	set := newChunkSet(t, 1000)
	victim := set.ids[500]
	provider, blocked := blockingProvider(set, victim)
	child, parent := newSessions(t)
	serveChunks(t, parent, provider, nil)
	ctx, cancel := context.WithCancel(t.Context())
	sink := store.NewMemory()
	done := async(func() error { return Fetch(ctx, child, set.ids, sink, FetchOptions{Streams: 4, Batch: 7}) })
	await(t, blocked)
	cancel()
	if err := await(t, done); !errors.Is(err, context.Canceled) {
		t.Errorf("fetch: %v, want context.Canceled", err)
	}
	if ok, _ := sink.HasChunk(victim); ok {
		t.Error("the chunk never served was stored")
	}
}

// TestFetchCancelledBeforeStart: a fetch that was cancelled before it could
// fetch anything must not report success.
func TestFetchCancelledBeforeStart(t *testing.T) {
	set := newChunkSet(t, 20)
	child, parent := newSessions(t)
	serveChunks(t, parent, StoreProvider(set.store), nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	// Which of the ready select cases wins is random: try enough times.
	for range 100 {
		err := Fetch(ctx, child, set.ids, store.NewMemory(), FetchOptions{Streams: 1, Batch: 5})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("fetch: %v, want context.Canceled", err)
		}
	}
}

func TestFetchEndsWhenSessionCloses(t *testing.T) {
	set := newChunkSet(t, 1000)
	victim := set.ids[500]
	for _, closer := range []string{"child", "parent"} {
		t.Run(closer+" closes", func(t *testing.T) {
			provider, blocked := blockingProvider(set, victim)
			child, parent := newSessions(t)
			// Not serveChunks: ServeChunks must end with the session, on
			// its own, even while the provider waits.
			served := async(func() error { return ServeChunks(t.Context(), parent, provider, nil, discardLog) })
			done := async(func() error {
				return Fetch(t.Context(), child, set.ids, store.NewMemory(), FetchOptions{Streams: 4, Batch: 7})
			})
			await(t, blocked)
			if closer == "child" {
				child.Close(errors.New("going away"))
			} else {
				parent.Close(ErrStopping)
			}
			if err := await(t, done); err == nil {
				t.Error("fetch succeeded on a closed session")
			}
			if err := await(t, served); err != nil {
				t.Errorf("ServeChunks: %v", err)
			}
		})
	}
}

// failingSink refuses every chunk.
type failingSink struct{ err error }

func (failingSink) HasChunk(distribution.ChunkID) (bool, error)   { return false, nil }
func (s failingSink) PutChunk(distribution.ChunkID, []byte) error { return s.err }

func TestFetchReturnsSinkError(t *testing.T) {
	set := newChunkSet(t, 100)
	child, parent := newSessions(t)
	serveChunks(t, parent, StoreProvider(set.store), nil)
	full := errors.New("no space left")
	if err := Fetch(t.Context(), child, set.ids, failingSink{full}, FetchOptions{Streams: 4, Batch: 7}); !errors.Is(err, full) {
		t.Errorf("fetch: %v, want %v", err, full)
	}
}

func TestFetchRefusesMisbehavingPeer(t *testing.T) {
	set := newChunkSet(t, 3)
	other := distribution.SumChunk([]byte("not wanted"))
	cases := []struct {
		name   string
		answer func(c *Conn, st Stream, want *Want) error
		want   error
	}{
		{"chunk of another id", func(c *Conn, _ Stream, w *Want) error {
			return c.Send(&Chunk{ID: other, Data: set.encoded[w.IDs[0]]})
		}, ErrProtocol},
		{"missing of another id", func(c *Conn, _ Stream, _ *Want) error {
			return c.Send(&Missing{ID: other, Error: ErrorOf(ErrNotFound)})
		}, ErrProtocol},
		{"welcome", func(c *Conn, _ Stream, _ *Want) error {
			return c.Send(&Welcome{Name: parentID.Name})
		}, ErrProtocol},
		{"malformed frame", func(_ *Conn, st Stream, _ *Want) error {
			_, err := st.Write(frameHeaderOf(0))
			return err
		}, ErrProtocol},
		{"error", func(c *Conn, _ Stream, _ *Want) error {
			return c.Send(ErrorOf(ErrStopping))
		}, ErrUnavailable},
		{"close", func(c *Conn, _ Stream, _ *Want) error { return c.Close() }, io.ErrUnexpectedEOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			child, parent := newSessions(t)
			peer := async(func() error {
				st, err := parent.AcceptStream(t.Context())
				if err != nil {
					return err
				}
				c := NewChunkConn(st, childID.Name)
				defer c.Close()
				m, err := c.Receive()
				if err != nil {
					return err
				}
				want, ok := m.(*Want)
				if !ok {
					return fmt.Errorf("received %s, want want", m.msgType())
				}
				if err := tc.answer(c, st, want); err != nil {
					return err
				}
				// Wait for the fetcher to hang up.
				for {
					if _, err := c.Receive(); err != nil {
						return nil
					}
				}
			})
			err := Fetch(t.Context(), child, set.ids, store.NewMemory(), FetchOptions{Streams: 1})
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), parentID.Name) {
				t.Errorf("fetch: %v, want an error wrapping %v naming %s", err, tc.want, parentID.Name)
			}
			if err := await(t, peer); err != nil {
				t.Errorf("peer: %v", err)
			}
		})
	}
}

func TestServeChunksRefusesOtherMessages(t *testing.T) {
	set := newChunkSet(t, 3)
	child, parent := newSessions(t)
	serveChunks(t, parent, StoreProvider(set.store), nil)
	st, err := child.OpenStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c := NewChunkConn(st, parentID.Name)
	defer c.Close()
	// A want is answered in order; then anything else ends the stream.
	sent := async(func() error { return c.Send(&Want{IDs: set.ids}) })
	for _, id := range set.ids {
		m, err := c.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if ch, ok := m.(*Chunk); !ok || ch.ID != id {
			t.Fatalf("answer %#v, want chunk %s", m, id.Short())
		}
	}
	if err := await(t, sent); err != nil {
		t.Fatal(err)
	}
	sent = async(func() error { return c.Send(&Status{Role: "subscriber"}) })
	m, err := c.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := m.(*Error); !ok || e.Code != CodeProtocol {
		t.Errorf("answer %#v, want a protocol error", m)
	}
	if err := await(t, sent); err != nil {
		t.Fatal(err)
	}
	if m, err := c.Receive(); err != io.EOF {
		t.Errorf("after the error: %v, %v; want the stream closed", m, err)
	}
}

// What a child may say in a Status, clipped, always fits a Subtree: a
// parent relays it, and one oversized report must not make its own report
// invalid upstream.
func TestClipNodeState(t *testing.T) {
	big := strings.Repeat("x", 10_000)
	st := &Status{Role: "subscriber", ActiveNode: "node-a", Problem: strings.Repeat("p", maxText)}
	for i := range 3000 {
		st.Revisions = append(st.Revisions, RevisionState{Name: "app", Revision: uint64(i + 1), Version: "1", State: "superseded", Reason: strings.Repeat("r", maxText)})
	}
	if err := st.validate(); err != nil {
		t.Fatalf("the status itself: %v", err)
	}
	n := NodeState{Name: "web-01", Role: st.Role, ActiveNode: st.ActiveNode, Agent: big, Problem: st.Problem + big, Revisions: st.Revisions}
	ClipNodeState(&n)
	m := &Subtree{Nodes: []NodeState{n}, Count: 1}
	if err := m.validate(); err != nil {
		t.Fatalf("clipped: %v", err)
	}
	if n.Revisions[0].Revision != 3000 || len(n.Revisions) != maxNodeRevisions {
		t.Errorf("kept %d revisions from %d; want the newest %d", len(n.Revisions), n.Revisions[0].Revision, maxNodeRevisions)
	}
	if (&Status{ActiveNode: big}).validate() == nil {
		t.Error("a status with an active node of 10,000 bytes is valid")
	}
}
