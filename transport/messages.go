package transport

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"

	"github.com/fxamacker/cbor/v2"
	"github.com/klauspost/compress/zstd"

	"ted/distribution"
)

// Message is one protocol message.
type Message interface {
	msgType() msgType
	// appendBody appends the encoded body to dst.
	appendBody(dst []byte) ([]byte, error)
}

type msgType byte

const (
	typeHello        msgType = 1
	typeWelcome      msgType = 2
	typeError        msgType = 3
	typeOffer        msgType = 4
	typeStatus       msgType = 5
	typeResult       msgType = 6
	typeWant         msgType = 7
	typeChunk        msgType = 8
	typeMissing      msgType = 9
	typeLeaseRequest msgType = 10
	typeLease        msgType = 11
	typeRevocations  msgType = 12
	typeSubtree      msgType = 13
	typeWaves        msgType = 14
)

func (t msgType) String() string {
	switch t {
	case typeHello:
		return "hello"
	case typeWelcome:
		return "welcome"
	case typeError:
		return "error"
	case typeOffer:
		return "offer"
	case typeStatus:
		return "status"
	case typeResult:
		return "result"
	case typeWant:
		return "want"
	case typeChunk:
		return "chunk"
	case typeMissing:
		return "missing"
	case typeLeaseRequest:
		return "lease request"
	case typeLease:
		return "lease"
	case typeRevocations:
		return "revocations"
	case typeSubtree:
		return "subtree"
	case typeWaves:
		return "waves"
	}
	return fmt.Sprintf("message type %d", byte(t))
}

// Protocol limits on message content.
const (
	// MaxWantIDs bounds the chunk ids of one want.
	MaxWantIDs = 1024
	// maxStatusRevisions bounds the revisions of one status report.
	maxStatusRevisions = 100_000
	// maxText bounds free text (reasons, error messages).
	maxText = 4096
	// maxCRL bounds a revocation list: some 20,000 revoked certificates,
	// far more than a fleet revokes before it makes a new CA.
	maxCRL = 1 << 20
	// maxCRLNumber bounds the digits of a CRL number: RFC 5280 allows 20
	// octets, at most 49 decimal digits.
	maxCRLNumber = 49
	// MaxSubtreeNodes bounds the nodes of one Subtree message; a larger
	// subtree travels in several.
	MaxSubtreeNodes = 2000
	// maxNodeRevisions bounds the revisions one node reports.
	maxNodeRevisions = 1000
)

// Hello is the first message of a session, sent by the side that dialled on
// the control stream.
type Hello struct {
	// Name must equal the name in the sender's certificate.
	Name string `cbor:"1,keyasint"`
	// Agent is the sender's ted version, for logs and status.
	Agent string `cbor:"2,keyasint"`
	// Channels the sender wants offers for (children only).
	Channels []string `cbor:"3,keyasint,omitempty"`
	// Cluster and Node name a node of a cluster subscriber (whose
	// certificate names the cluster's subscriber as a whole). Epoch 0
	// opens a lease session (LeaseRequest, Lease); a session for content
	// carries the epoch of the lease its node holds, and is refused
	// otherwise.
	Cluster string `cbor:"4,keyasint,omitempty"`
	Node    string `cbor:"5,keyasint,omitempty"`
	Epoch   uint64 `cbor:"6,keyasint,omitempty"`
	// Instance tells apart two processes that claim the same node name
	// (a copied config): the lease is held by node and instance.
	Instance string `cbor:"7,keyasint,omitempty"`
	// CRLNumber is the number (decimal) of the revocation list the child
	// holds, if any, so that its parent sends its list only if it is
	// newer, not at every reconnect. Sent on ted/1.1 sessions only: a
	// ted/1 parent refuses a hello with a field it does not know.
	CRLNumber string `cbor:"8,keyasint,omitempty"`
}

// LeaseRequest asks the parent for the lease of the sender's cluster, or
// to renew it; Release gives it up at once.
type LeaseRequest struct {
	Release bool `cbor:"1,keyasint,omitempty"`
}

// Lease answers a LeaseRequest. Granted: the sender holds the lease for
// TTL (milliseconds) from when the parent received the request, under
// Epoch. Otherwise Holder holds it, and the parent will not grant it to
// another before RetryIn (milliseconds).
type Lease struct {
	Granted bool   `cbor:"1,keyasint,omitempty"`
	Holder  string `cbor:"2,keyasint,omitempty"`
	Epoch   uint64 `cbor:"3,keyasint,omitempty"`
	TTL     uint32 `cbor:"4,keyasint,omitempty"`
	RetryIn uint32 `cbor:"5,keyasint,omitempty"`
}

// Revocations carries the CA's revocation list, parent to child on the
// control stream: after the welcome, and again whenever the parent's list
// changes. CRL is the X.509 CRL as the CA signed it (DER); the child checks
// the signature against its own CA and keeps the list only if its number
// is higher than that of the list it has, so a parent can neither forge
// nor roll back a list.
type Revocations struct {
	CRL []byte `cbor:"1,keyasint"`
}

// Welcome accepts a Hello.
type Welcome struct {
	Name  string `cbor:"1,keyasint"`
	Agent string `cbor:"2,keyasint"`
}

// Offer carries a signed revision, parent to child or publisher to
// distributor. The envelope travels zstd-compressed: a manifest of many
// files is large, and most of it (paths, repeated chunk sizes) compresses
// well.
type Offer struct {
	Signed *distribution.Signed `cbor:"-"`
}

// RevisionState is a child's view of one revision.
type RevisionState struct {
	Name     string `cbor:"1,keyasint" json:"name"`
	Revision uint64 `cbor:"2,keyasint" json:"revision"`
	Version  string `cbor:"3,keyasint" json:"version"`
	// State is receiving, received, extracted, blocked, failed,
	// rolled_back or superseded.
	State  string `cbor:"4,keyasint" json:"state"`
	Reason string `cbor:"5,keyasint,omitempty" json:"reason,omitempty"`
	Error  string `cbor:"6,keyasint,omitempty" json:"error,omitempty"`
	// Chunks and HaveChunks count the revision's distinct chunks and those
	// held, for progress while receiving.
	Chunks     int `cbor:"7,keyasint,omitempty" json:"chunks,omitempty"`
	HaveChunks int `cbor:"8,keyasint,omitempty" json:"have_chunks,omitempty"`
}

// Status is a child's report of every revision it knows, sent whenever a
// state changes. Each report replaces the previous one.
type Status struct {
	Role       string          `cbor:"1,keyasint"`
	ActiveNode string          `cbor:"2,keyasint,omitempty"`
	Revisions  []RevisionState `cbor:"3,keyasint,omitempty"`
	// Problem is why the child cannot do its job now ("" when it can):
	// what its /healthz says. Sent on ted/1.2 sessions only.
	Problem string `cbor:"4,keyasint,omitempty"`
}

// NodeState is what a distributor knows of one node of its subtree: a
// child of its own or a node further down, as its child reported it.
type NodeState struct {
	Name string `cbor:"1,keyasint"`
	// Parent is the name of the distributor the node is connected to (or
	// was, last).
	Parent     string   `cbor:"2,keyasint"`
	Role       string   `cbor:"3,keyasint"`
	ActiveNode string   `cbor:"4,keyasint,omitempty"`
	Agent      string   `cbor:"5,keyasint,omitempty"`
	Channels   []string `cbor:"6,keyasint,omitempty"`
	// Connected: its session with its parent is up, as far as the sender
	// knows. Otherwise LastSeen (Unix milliseconds) is when it went away.
	Connected bool            `cbor:"7,keyasint,omitempty"`
	LastSeen  int64           `cbor:"8,keyasint,omitempty"`
	Problem   string          `cbor:"9,keyasint,omitempty"`
	Revisions []RevisionState `cbor:"10,keyasint,omitempty"`
}

// Subtree reports the sender's subtree to its parent (ted/1.2), on the
// control stream beside Status: the whole of it after the hello, then
// only the nodes that changed. Full starts a whole report: the parent
// forgets what this child reported before, and the nodes follow in this
// message and the next ones (at most MaxSubtreeNodes each, More on all
// but the last). Gone names
// nodes no longer in the subtree. Count and Digest describe the whole
// subtree once this message is applied (Digest: see NodeDigest); a
// message with no nodes is the periodic summary of a quiet subtree, and
// a parent whose copy does not match ends the session, so the next one
// starts with a whole report. The body travels zstd-compressed.
type Subtree struct {
	Full   bool        `cbor:"1,keyasint,omitempty"`
	Nodes  []NodeState `cbor:"2,keyasint,omitempty"`
	Gone   []string    `cbor:"3,keyasint,omitempty"`
	Count  int         `cbor:"4,keyasint"`
	Digest uint64      `cbor:"5,keyasint"`
	// More: the whole report goes on in the next message; Count and
	// Digest are checked only on the last.
	More bool `cbor:"6,keyasint,omitempty"`
}

// Waves passes a distributor's rollouts in waves down to a child
// distributor (ted/1.3), on the control stream: the distributor where a
// channel has waves decides for its whole subtree, and the distributors
// below hold each revision back from their subscribers outside the first
// wave until the rollout opens. Each message replaces the one before.
type Waves struct {
	Rollouts []Rollout `cbor:"1,keyasint,omitempty"`
}

// Rollout is one revision's rollout in waves.
type Rollout struct {
	Name     string `cbor:"1,keyasint" json:"name"`
	Revision uint64 `cbor:"2,keyasint" json:"revision"`
	// Canary is the first wave: a share of the subscribers ("5%", by a
	// hash of their names) or a name pattern ("web-0*"). Chosen is the
	// one subscriber of the first wave when the share chose none.
	Canary string `cbor:"3,keyasint" json:"canary"`
	Chosen string `cbor:"4,keyasint,omitempty" json:"chosen,omitempty"`
	// Open: every node receives it. Stopped says why the rollout stopped
	// (the first wave failed): the rest never receive it.
	Open    bool   `cbor:"5,keyasint,omitempty" json:"open,omitempty"`
	Stopped string `cbor:"6,keyasint,omitempty" json:"stopped,omitempty"`
	// Channels are the revision's: a rollout is passed down only to the
	// children that take one of them.
	Channels []string `cbor:"7,keyasint,omitempty" json:"channels,omitempty"`
}

// MaxRollouts bounds the rollouts of one Waves message.
const MaxRollouts = 1024

// Result answers an offer from a publisher: the revision is stored, or why
// not.
type Result struct {
	Name     string `cbor:"1,keyasint"`
	Revision uint64 `cbor:"2,keyasint"`
	// Fetched counts the chunks and encoded bytes the distributor fetched
	// from the publisher; zero when it held them all.
	FetchedChunks int   `cbor:"3,keyasint"`
	FetchedBytes  int64 `cbor:"4,keyasint"`
	// AlreadyStored: the distributor held the revision before the offer.
	AlreadyStored bool `cbor:"5,keyasint,omitempty"`
}

// Want asks for chunks on a chunk stream; the peer answers each id, in
// order, with a Chunk or a Missing.
type Want struct {
	IDs []distribution.ChunkID `cbor:"1,keyasint"`
}

// Chunk carries one encoded chunk (see distribution.EncodeChunk). Data is
// not checked against ID here; the receiver does that with DecodeChunk.
type Chunk struct {
	ID   distribution.ChunkID
	Data []byte
}

// Missing says a wanted chunk cannot be served, and why.
type Missing struct {
	ID    distribution.ChunkID `cbor:"1,keyasint"`
	Error *Error               `cbor:"2,keyasint"`
}

func (*Hello) msgType() msgType        { return typeHello }
func (*Welcome) msgType() msgType      { return typeWelcome }
func (*Error) msgType() msgType        { return typeError }
func (*Offer) msgType() msgType        { return typeOffer }
func (*Status) msgType() msgType       { return typeStatus }
func (*Result) msgType() msgType       { return typeResult }
func (*Want) msgType() msgType         { return typeWant }
func (*Chunk) msgType() msgType        { return typeChunk }
func (*Missing) msgType() msgType      { return typeMissing }
func (*LeaseRequest) msgType() msgType { return typeLeaseRequest }
func (*Lease) msgType() msgType        { return typeLease }
func (*Revocations) msgType() msgType  { return typeRevocations }
func (*Subtree) msgType() msgType      { return typeSubtree }
func (*Waves) msgType() msgType        { return typeWaves }

var (
	encMode = mustEncMode()
	decMode = mustDecMode()
)

func mustEncMode() cbor.EncMode {
	m, err := cbor.CanonicalEncOptions().EncMode()
	if err != nil {
		panic(err) // only on invalid options
	}
	return m
}

func mustDecMode() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxArrayElements:  distribution.MaxEntries,
		MaxMapPairs:       64,
		MaxNestedLevels:   8,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}

func appendCBOR(dst []byte, v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(dst, b...), nil
}

func (m *Hello) appendBody(dst []byte) ([]byte, error)        { return appendCBOR(dst, m) }
func (m *Welcome) appendBody(dst []byte) ([]byte, error)      { return appendCBOR(dst, m) }
func (m *Error) appendBody(dst []byte) ([]byte, error)        { return appendCBOR(dst, m) }
func (m *Status) appendBody(dst []byte) ([]byte, error)       { return appendCBOR(dst, m) }
func (m *Result) appendBody(dst []byte) ([]byte, error)       { return appendCBOR(dst, m) }
func (m *Want) appendBody(dst []byte) ([]byte, error)         { return appendCBOR(dst, m) }
func (m *Missing) appendBody(dst []byte) ([]byte, error)      { return appendCBOR(dst, m) }
func (m *LeaseRequest) appendBody(dst []byte) ([]byte, error) { return appendCBOR(dst, m) }
func (m *Lease) appendBody(dst []byte) ([]byte, error)        { return appendCBOR(dst, m) }
func (m *Revocations) appendBody(dst []byte) ([]byte, error)  { return appendCBOR(dst, m) }
func (m *Waves) appendBody(dst []byte) ([]byte, error)        { return appendCBOR(dst, m) }

func (m *Subtree) appendBody(dst []byte) ([]byte, error) {
	b, err := encMode.Marshal(m)
	if err != nil {
		return nil, err
	}
	enc, _ := offerCodecs()
	return enc.EncodeAll(b, dst), nil
}

// ClipNodeState makes n fit what a Subtree may carry, whatever its source
// said: text cut to its limits, at most the newest maxNodeRevisions
// revisions. A parent relays what its children report, and one child's
// oversized report must not make its parent's report to its own parent
// invalid.
func ClipNodeState(n *NodeState) {
	cut := func(s *string, max int) {
		if len(*s) > max {
			*s = strings.ToValidUTF8((*s)[:max], "")
		}
	}
	cut(&n.Name, distribution.MaxNameLen)
	cut(&n.Parent, distribution.MaxNameLen)
	cut(&n.Role, distribution.MaxNameLen)
	cut(&n.ActiveNode, distribution.MaxNameLen)
	cut(&n.Agent, 128)
	cut(&n.Problem, maxText)
	if len(n.Channels) > distribution.MaxChannels {
		n.Channels = n.Channels[:distribution.MaxChannels]
	}
	if len(n.Revisions) > maxNodeRevisions {
		revs := slices.Clone(n.Revisions)
		slices.SortFunc(revs, func(a, b RevisionState) int { return cmp.Compare(b.Revision, a.Revision) })
		n.Revisions = revs[:maxNodeRevisions]
	}
}

// NodeSize is about how many bytes n takes in a Subtree before
// compression, to keep each message well inside the frame limit.
func NodeSize(n *NodeState) int {
	size := 64 + len(n.Name) + len(n.Parent) + len(n.Role) + len(n.ActiveNode) + len(n.Agent) + len(n.Problem)
	for _, c := range n.Channels {
		size += len(c) + 2
	}
	for _, r := range n.Revisions {
		size += 40 + len(r.Name) + len(r.Version) + len(r.State) + len(r.Reason) + len(r.Error)
	}
	return size
}

// MaxSubtreeBytes bounds the size of one Subtree message's nodes (as
// NodeSize counts them), far inside the frame limit.
const MaxSubtreeBytes = 4 << 20

// NodeDigest is a node's share of a Subtree's Digest, which is the sum
// (modulo 2^64) of the shares of its nodes: FNV-1a of the node's
// canonical CBOR.
func NodeDigest(n *NodeState) uint64 {
	b, err := encMode.Marshal(n)
	if err != nil {
		return 0 // only for values CBOR cannot hold; none here
	}
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

func (m *Chunk) appendBody(dst []byte) ([]byte, error) {
	return append(append(dst, m.ID[:]...), m.Data...), nil
}

var (
	offerZstdOnce sync.Once
	offerEnc      *zstd.Encoder
	offerDec      *zstd.Decoder
)

func offerCodecs() (*zstd.Encoder, *zstd.Decoder) {
	offerZstdOnce.Do(func() {
		var err error
		offerEnc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		if err != nil {
			panic(err) // only on invalid options
		}
		// The decoder refuses to produce more than an envelope can hold, so
		// a small hostile offer cannot expand into gigabytes.
		offerDec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(maxControlFrame))
		if err != nil {
			panic(err)
		}
	})
	return offerEnc, offerDec
}

func (m *Offer) appendBody(dst []byte) ([]byte, error) {
	if m.Signed == nil {
		return nil, errors.New("offer without a revision")
	}
	enc, _ := offerCodecs()
	return enc.EncodeAll(m.Signed.Encode(), dst), nil
}

// decodeMessage decodes and validates a frame body of type t.
func decodeMessage(t msgType, body []byte) (Message, error) {
	var m Message
	switch t {
	case typeHello:
		m = new(Hello)
	case typeWelcome:
		m = new(Welcome)
	case typeError:
		m = new(Error)
	case typeStatus:
		m = new(Status)
	case typeResult:
		m = new(Result)
	case typeWant:
		m = new(Want)
	case typeMissing:
		m = new(Missing)
	case typeLeaseRequest:
		m = new(LeaseRequest)
	case typeLease:
		m = new(Lease)
	case typeRevocations:
		m = new(Revocations)
	case typeWaves:
		m = new(Waves)
	case typeChunk:
		var c Chunk
		if len(body) < len(c.ID)+1 {
			return nil, fmt.Errorf("chunk frame of %d bytes", len(body))
		}
		copy(c.ID[:], body)
		c.Data = body[len(c.ID):]
		return &c, nil
	case typeSubtree:
		_, dec := offerCodecs()
		plain, err := dec.DecodeAll(body, nil)
		if err != nil {
			return nil, fmt.Errorf("subtree: %v", err)
		}
		var st Subtree
		if err := decMode.Unmarshal(plain, &st); err != nil {
			return nil, fmt.Errorf("subtree: %v", err)
		}
		if again, err := encMode.Marshal(&st); err != nil || !bytes.Equal(again, plain) {
			return nil, errors.New("subtree: not canonical CBOR")
		}
		if err := st.validate(); err != nil {
			return nil, fmt.Errorf("subtree: %v", err)
		}
		return &st, nil
	case typeOffer:
		_, dec := offerCodecs()
		plain, err := dec.DecodeAll(body, nil)
		if err != nil {
			return nil, fmt.Errorf("offer: %v", err)
		}
		s, err := distribution.DecodeSigned(plain)
		if err != nil {
			return nil, fmt.Errorf("offer: %v", err)
		}
		return &Offer{Signed: s}, nil
	default:
		return nil, fmt.Errorf("unknown %s", t)
	}
	if err := decMode.Unmarshal(body, m); err != nil {
		return nil, fmt.Errorf("%s: %v", t, err)
	}
	// Canonical only: one message has one encoding, as for manifests.
	if again, err := m.appendBody(nil); err != nil || !bytes.Equal(again, body) {
		return nil, fmt.Errorf("%s: not canonical CBOR", t)
	}
	if v, ok := m.(interface{ validate() error }); ok {
		if err := v.validate(); err != nil {
			return nil, fmt.Errorf("%s: %v", t, err)
		}
	}
	return m, nil
}

func (m *Hello) validate() error {
	if err := validText("name", m.Name, distribution.MaxNameLen); err != nil {
		return err
	}
	if len(m.Channels) > distribution.MaxChannels {
		return fmt.Errorf("%d channels (limit %d)", len(m.Channels), distribution.MaxChannels)
	}
	for _, c := range m.Channels {
		if err := distribution.ValidName("channel", c); err != nil {
			return err
		}
	}
	if m.Cluster != "" || m.Node != "" || m.Epoch != 0 {
		if err := distribution.ValidName("cluster", m.Cluster); err != nil {
			return err
		}
		if err := distribution.ValidName("cluster node", m.Node); err != nil {
			return err
		}
		if err := validText("instance", m.Instance, 64); err != nil {
			return err
		}
	}
	if m.CRLNumber != "" && (len(m.CRLNumber) > maxCRLNumber || strings.Trim(m.CRLNumber, "0123456789") != "") {
		return fmt.Errorf("revocation list number %q: want at most %d decimal digits", Truncate(m.CRLNumber, 64), maxCRLNumber)
	}
	return validText("agent", m.Agent, 128)
}

func (m *Revocations) validate() error {
	if len(m.CRL) == 0 || len(m.CRL) > maxCRL {
		return fmt.Errorf("revocation list of %d bytes (want 1 to %d)", len(m.CRL), maxCRL)
	}
	return nil
}

func (m *Lease) validate() error { return validText("holder", m.Holder, distribution.MaxNameLen) }

func (m *Welcome) validate() error {
	if err := validText("name", m.Name, distribution.MaxNameLen); err != nil {
		return err
	}
	return validText("agent", m.Agent, 128)
}

func (m *Error) validate() error { return validText("message", m.Message, maxText) }

func (m *Status) validate() error {
	if len(m.Revisions) > maxStatusRevisions {
		return fmt.Errorf("%d revisions (limit %d)", len(m.Revisions), maxStatusRevisions)
	}
	if err := validText("problem", m.Problem, maxText); err != nil {
		return err
	}
	if err := validText("role", m.Role, distribution.MaxNameLen); err != nil {
		return err
	}
	if err := validText("active node", m.ActiveNode, distribution.MaxNameLen); err != nil {
		return err
	}
	return validRevisionStates(m.Revisions)
}

func validRevisionStates(revs []RevisionState) error {
	for _, r := range revs {
		if err := distribution.ValidName("distribution", r.Name); err != nil {
			return err
		}
		for _, s := range []string{r.Version, r.State, r.Reason, r.Error} {
			if err := validText("status text", s, maxText); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *Result) validate() error { return distribution.ValidName("distribution", m.Name) }

func (m *Waves) validate() error {
	if len(m.Rollouts) > MaxRollouts {
		return fmt.Errorf("%d rollouts (limit %d)", len(m.Rollouts), MaxRollouts)
	}
	for _, r := range m.Rollouts {
		if err := distribution.ValidName("distribution", r.Name); err != nil {
			return err
		}
		if r.Canary == "" {
			return fmt.Errorf("rollout of %s@%d: no first wave", r.Name, r.Revision)
		}
		if len(r.Channels) > distribution.MaxChannels {
			return fmt.Errorf("rollout of %s@%d: %d channels", r.Name, r.Revision, len(r.Channels))
		}
		for _, ch := range r.Channels {
			if err := distribution.ValidName("channel", ch); err != nil {
				return err
			}
		}
		for _, f := range []struct{ name, v string }{{"canary", r.Canary}, {"chosen", r.Chosen}, {"stopped", r.Stopped}} {
			if err := validText(f.name, f.v, maxText); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *Subtree) validate() error {
	if len(m.Nodes) > MaxSubtreeNodes {
		return fmt.Errorf("%d nodes (limit %d)", len(m.Nodes), MaxSubtreeNodes)
	}
	if len(m.Gone) > MaxSubtreeNodes {
		return fmt.Errorf("%d nodes gone (limit %d)", len(m.Gone), MaxSubtreeNodes)
	}
	if m.Count < 0 {
		return fmt.Errorf("count %d", m.Count)
	}
	for _, name := range m.Gone {
		if err := validText("node name", name, distribution.MaxNameLen); err != nil {
			return err
		}
	}
	for i := range m.Nodes {
		if err := m.Nodes[i].validate(); err != nil {
			return fmt.Errorf("node %q: %v", Truncate(m.Nodes[i].Name, 64), err)
		}
	}
	return nil
}

func (n *NodeState) validate() error {
	for _, f := range []struct {
		field, s string
	}{{"name", n.Name}, {"parent", n.Parent}, {"role", n.Role}, {"active node", n.ActiveNode}} {
		if err := validText(f.field, f.s, distribution.MaxNameLen); err != nil {
			return err
		}
	}
	if n.Name == "" {
		return errors.New("no name")
	}
	if err := validText("agent", n.Agent, 128); err != nil {
		return err
	}
	if err := validText("problem", n.Problem, maxText); err != nil {
		return err
	}
	if len(n.Channels) > distribution.MaxChannels {
		return fmt.Errorf("%d channels (limit %d)", len(n.Channels), distribution.MaxChannels)
	}
	if len(n.Revisions) > maxNodeRevisions {
		return fmt.Errorf("%d revisions (limit %d)", len(n.Revisions), maxNodeRevisions)
	}
	return validRevisionStates(n.Revisions)
}

func (m *Want) validate() error {
	if len(m.IDs) == 0 || len(m.IDs) > MaxWantIDs {
		return fmt.Errorf("%d chunk ids (want 1 to %d)", len(m.IDs), MaxWantIDs)
	}
	return nil
}

func (m *Missing) validate() error {
	if m.Error == nil {
		return errors.New("no error")
	}
	return m.Error.validate()
}

func validText(field, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s of %d bytes (limit %d)", field, len(s), max)
	}
	return nil
}
