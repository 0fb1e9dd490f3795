package distribution

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
)

// Signature errors. Both mean "verification failed" to the command line.
var (
	ErrUntrustedKey = errors.New("signed by an untrusted key")
	ErrBadSignature = errors.New("bad signature")
)

// signContext separates manifest signatures from anything else the same key
// might ever sign.
const signContext = "ted manifest v1\x00"

// KeyID returns the short name of a publisher key: the first 16 hex digits of
// the SHA-256 of the public key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Signed is a manifest as stored and sent: the exact encoded bytes, the id of
// the key that signed them and the signature. The manifest is never
// re-encoded after signing.
type Signed struct {
	_         struct{} `cbor:",toarray"`
	Body      []byte
	KeyID     string
	Signature []byte
}

// Sign sets m.KeyID, validates and encodes m, and signs the encoding.
func Sign(m *Manifest, key ed25519.PrivateKey) (*Signed, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("sign manifest: not an ed25519 private key")
	}
	pub := key.Public().(ed25519.PublicKey)
	m.KeyID = KeyID(pub)
	if err := m.Validate(); err != nil {
		return nil, err
	}
	body, err := m.Encode()
	if err != nil {
		return nil, fmt.Errorf("encode manifest %s: %w", m.label(), err)
	}
	// Sign only what every node will be able to decode: a signed manifest
	// that fails to decode would block its distribution for good.
	if _, err := DecodeManifest(body); err != nil {
		return nil, err
	}
	return &Signed{Body: body, KeyID: m.KeyID, Signature: ed25519.Sign(key, signedMessage(body))}, nil
}

func signedMessage(body []byte) []byte {
	msg := make([]byte, 0, len(signContext)+len(body))
	return append(append(msg, signContext...), body...)
}

// Encode returns the stored form of s.
func (s *Signed) Encode() []byte {
	b, err := encMode.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("encode signed manifest: %v", err)) // byte and text strings always encode
	}
	return b
}

// DecodeSigned decodes the stored form. It checks only the envelope; use
// Verify for the signature and Manifest for the content.
func DecodeSigned(b []byte) (*Signed, error) {
	if len(b) > MaxManifestBytes+1024 {
		return nil, fmt.Errorf("%w: signed manifest of %d bytes, over the limit", ErrInvalidManifest, len(b))
	}
	var s Signed
	if err := decMode.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrInvalidManifest, err)
	}
	if len(s.Signature) != ed25519.SignatureSize || s.KeyID == "" || len(s.KeyID) > 64 {
		return nil, fmt.Errorf("%w: envelope: malformed key id or signature", ErrInvalidManifest)
	}
	return &s, nil
}

// Manifest decodes and validates the body without checking the signature:
// for a node's own store, whose content was verified when it arrived. Use
// Verify for anything that came from elsewhere.
func (s *Signed) Manifest() (*Manifest, error) {
	m, err := DecodeManifest(s.Body)
	if err != nil {
		return nil, err
	}
	if m.KeyID != s.KeyID {
		return nil, fmt.Errorf("%w: %s: envelope key %s, manifest key %s", ErrInvalidManifest, m.label(), s.KeyID, m.KeyID)
	}
	return m, nil
}

// Trust is a set of publisher public keys.
type Trust struct {
	keys map[string]ed25519.PublicKey
}

// NewTrust returns a trust set holding keys.
func NewTrust(keys ...ed25519.PublicKey) *Trust {
	t := &Trust{keys: make(map[string]ed25519.PublicKey, len(keys))}
	for _, k := range keys {
		t.keys[KeyID(k)] = k
	}
	return t
}

// KeyIDs returns the ids of the trusted keys, sorted.
func (t *Trust) KeyIDs() []string {
	ids := make([]string, 0, len(t.keys))
	for id := range t.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Verify checks the signature against the trusted keys, then decodes and
// validates the manifest. Nothing in the body is looked at before the
// signature holds.
func (t *Trust) Verify(s *Signed) (*Manifest, error) {
	key, ok := t.keys[s.KeyID]
	if !ok {
		return nil, fmt.Errorf("%w: key %s", ErrUntrustedKey, s.KeyID)
	}
	if !ed25519.Verify(key, signedMessage(s.Body), s.Signature) {
		return nil, fmt.Errorf("%w: key %s", ErrBadSignature, s.KeyID)
	}
	return s.Manifest()
}
