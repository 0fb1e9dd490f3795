package pki

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// A join token lets one new server enroll once: whoever holds it may have
// one certificate of the role and groups it names signed by the CA, so it
// is a bearer secret with a short life. It is
//
//	tedjoin1.<payload>.<signature>
//
// both parts unpadded base64url: the payload is a CBOR map (tokenPayload)
// in core deterministic encoding, the signature the CA key's ECDSA
// signature (ASN.1) over SHA-256 of tokenDomain followed by the payload.
// Signing with the CA key means a verifier needs nothing but the CA
// certificate it already trusts; the domain string keeps a token's
// signature from ever passing for a signature on anything else the CA key
// signs (certificates and revocation lists are signed over DER, which
// cannot begin with it).
const (
	tokenPrefix = "tedjoin1."
	tokenDomain = "TED join token v1\x00"

	// DefaultTokenTTL is how long a join token is valid when its spec says
	// nothing: a day is enough to hand it to whoever builds the server.
	DefaultTokenTTL = 24 * time.Hour
	// MaxTokenTTL bounds a join token's life, since it is a bearer secret
	// that can be copied and used by anyone until it expires or is used.
	MaxTokenTTL = 30 * 24 * time.Hour

	// maxTokenLen bounds what VerifyToken decodes: the largest valid token
	// (32 groups of 64 characters) is well under 4 KiB.
	maxTokenLen = 8 << 10
	tokenIDLen  = 16

	tokenLogName  = "tokens.jsonl"
	tokenUsedName = "tokens-used.jsonl"
)

// Errors of join tokens. Each is wrapped with the details: when a token
// expired, when and by whom it was used, or what is wrong with it.
var (
	// ErrTokenInvalid: not a join token, damaged, or not signed by the CA.
	ErrTokenInvalid = errors.New("invalid join token")
	// ErrTokenExpired: a genuine token past its expiry.
	ErrTokenExpired = errors.New("join token expired")
	// ErrTokenUsed: a genuine token that already enrolled a node.
	ErrTokenUsed = errors.New("join token already used")
)

// tokenError reads as its own message and is its kind for errors.Is.
type tokenError struct {
	kind error
	msg  string
}

func (e *tokenError) Error() string { return e.msg }
func (e *tokenError) Unwrap() error { return e.kind }

func invalidToken(format string, args ...any) error {
	return &tokenError{kind: ErrTokenInvalid, msg: "invalid join token: " + fmt.Sprintf(format, args...)}
}

// TokenSpec says what a join token allows.
type TokenSpec struct {
	// Role and Groups are bound into the certificate the token enrolls.
	Role   Role
	Groups []string
	// Name, if set, is the only node name the token may enroll.
	Name string
	// TTL is how long the token is valid from now: 0 means DefaultTokenTTL,
	// more than MaxTokenTTL is refused.
	TTL time.Duration
}

// Token is what a verified join token says.
type Token struct {
	// ID identifies the token in logs and in the record of used tokens:
	// 32 hexadecimal digits. It is not secret and cannot stand in for the
	// token.
	ID     string   `json:"id"`
	Role   Role     `json:"role"`
	Groups []string `json:"groups,omitempty"`
	// Name is the only node name the token may enroll; empty allows any.
	Name    string    `json:"name,omitempty"`
	Expires time.Time `json:"expires"`
	Issued  time.Time `json:"issued"`
}

// tokenPayload is the signed part of a token. Integer keys keep it short,
// since operators copy tokens around; times are Unix seconds.
type tokenPayload struct {
	ID      []byte   `cbor:"1,keyasint"`
	Role    string   `cbor:"2,keyasint"`
	Groups  []string `cbor:"3,keyasint,omitempty"`
	Name    string   `cbor:"4,keyasint,omitempty"`
	Expires int64    `cbor:"5,keyasint"`
	Issued  int64    `cbor:"6,keyasint"`
}

var (
	tokenEncMode = mustTokenEncMode()
	tokenDecMode = mustTokenDecMode()
)

func mustTokenEncMode() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err) // only on invalid options
	}
	return m
}

// mustTokenDecMode is strict, although only a payload whose signature
// checked is ever decoded: a CA that signed something odd is still not to
// be read loosely.
func mustTokenDecMode() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxArrayElements:  maxGroups,
		MaxMapPairs:       16,
		MaxNestedLevels:   4,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err) // only on invalid options
	}
	return m
}

// tokenDigest is what the CA signs for a payload.
func tokenDigest(payload []byte) []byte {
	h := sha256.New()
	h.Write([]byte(tokenDomain))
	h.Write(payload)
	return h.Sum(nil)
}

// NewToken makes a one-time join token as spec says, signed by the CA, and
// logs it (its ID, role, groups, name and times; never the token itself)
// in DIR/tokens.jsonl. It returns the token, to hand to the new server, and
// what it says.
func (ca *CA) NewToken(spec TokenSpec) (string, Token, error) {
	if err := tokenRole(string(spec.Role)); err != nil {
		return "", Token{}, err
	}
	if err := ValidateGroups(spec.Groups); err != nil {
		return "", Token{}, err
	}
	if spec.Name != "" {
		if err := ValidateName(spec.Name); err != nil {
			return "", Token{}, err
		}
	}
	ttl := spec.TTL
	switch {
	case ttl == 0:
		ttl = DefaultTokenTTL
	case ttl < 0:
		return "", Token{}, fmt.Errorf("join token lifetime %v: must be positive", ttl)
	case ttl > MaxTokenTTL:
		return "", Token{}, fmt.Errorf("join token lifetime %v is too long: at most %v (30 days), since anyone who copies the token can use it until then", ttl, MaxTokenTTL)
	}
	if _, ok := ca.key.Public().(*ecdsa.PublicKey); !ok {
		return "", Token{}, fmt.Errorf("%s: join tokens need an ECDSA CA key, not %T", filepath.Join(ca.Dir, caKeyName), ca.key.Public())
	}
	now := time.Now()
	// Whole seconds, as the payload holds them, so that the Token returned
	// here is the one VerifyToken reads back. Rounding up keeps a token of
	// one second valid for at least that long.
	issued := now.Truncate(time.Second)
	expires := now.Add(ttl + time.Second - 1).Truncate(time.Second)
	if expires.After(ca.Cert.NotAfter) {
		expires = ca.Cert.NotAfter.Truncate(time.Second)
	}
	if !expires.After(now) {
		return "", Token{}, fmt.Errorf("%s: CA expired on %s", filepath.Join(ca.Dir, caCertName), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	id := make([]byte, tokenIDLen)
	if _, err := rand.Read(id); err != nil {
		return "", Token{}, fmt.Errorf("generate join token id: %w", err)
	}
	p := tokenPayload{ID: id, Role: string(spec.Role), Groups: spec.Groups, Name: spec.Name,
		Expires: expires.Unix(), Issued: issued.Unix()}
	payload, err := tokenEncMode.Marshal(p)
	if err != nil {
		return "", Token{}, fmt.Errorf("encode join token: %w", err)
	}
	sig, err := ca.key.Sign(rand.Reader, tokenDigest(payload), crypto.SHA256)
	if err != nil {
		return "", Token{}, fmt.Errorf("sign join token: %w", err)
	}
	tok := p.token()
	if err := appendJSONLine(filepath.Join(ca.Dir, tokenLogName), tok); err != nil {
		// A token that is not logged is not handed out.
		return "", Token{}, fmt.Errorf("log join token: %w", err)
	}
	s := tokenPrefix + base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sig)
	return s, tok, nil
}

func (p tokenPayload) token() Token {
	return Token{
		ID:      hex.EncodeToString(p.ID),
		Role:    Role(p.Role),
		Groups:  slices.Clone(p.Groups),
		Name:    p.Name,
		Expires: time.Unix(p.Expires, 0).UTC(),
		Issued:  time.Unix(p.Issued, 0).UTC(),
	}
}

// VerifyToken checks that s is a join token signed by one of cas and not
// expired at now, and returns what it says. Its errors wrap ErrTokenInvalid
// or ErrTokenExpired, and never quote the token. It does not know whether
// the token was used: the CA's ConsumeToken does.
func VerifyToken(s string, cas []*x509.Certificate, now time.Time) (Token, error) {
	s = strings.TrimSpace(s)
	if len(s) > maxTokenLen {
		return Token{}, invalidToken("%d bytes long, more than any join token", len(s))
	}
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		if strings.HasPrefix(s, "tedjoin") {
			return Token{}, invalidToken("unknown version (this ted reads %s... tokens)", tokenPrefix)
		}
		return Token{}, invalidToken("does not start with %q (made by ted pki token)", tokenPrefix)
	}
	payloadText, sigText, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sigText, ".") {
		return Token{}, invalidToken("want %s followed by two parts separated by '.' (truncated when copied?)", tokenPrefix)
	}
	enc := base64.RawURLEncoding.Strict()
	payload, err := enc.DecodeString(payloadText)
	if err != nil || len(payload) == 0 {
		return Token{}, invalidToken("damaged payload (truncated when copied?)")
	}
	sig, err := enc.DecodeString(sigText)
	if err != nil || len(sig) == 0 {
		return Token{}, invalidToken("damaged signature (truncated when copied?)")
	}
	digest := tokenDigest(payload)
	signed := false
	for _, ca := range cas {
		if pub, ok := ca.PublicKey.(*ecdsa.PublicKey); ok && ecdsa.VerifyASN1(pub, digest, sig) {
			signed = true
			break
		}
	}
	if !signed {
		return Token{}, invalidToken("not signed by this CA (made for another fleet, or altered)")
	}
	var p tokenPayload
	if err := tokenDecMode.Unmarshal(payload, &p); err != nil {
		return Token{}, invalidToken("malformed payload: %v", err)
	}
	if err := p.check(); err != nil {
		return Token{}, invalidToken("%v", err)
	}
	t := p.token()
	if !now.Before(t.Expires) {
		return t, expiredToken(t)
	}
	return t, nil
}

// check reports what is wrong with a decoded payload.
func (p tokenPayload) check() error {
	if len(p.ID) != tokenIDLen {
		return fmt.Errorf("id is %d bytes, want %d", len(p.ID), tokenIDLen)
	}
	if err := tokenRole(p.Role); err != nil {
		return err
	}
	if err := ValidateGroups(p.Groups); err != nil {
		return err
	}
	if p.Name != "" {
		if err := ValidateName(p.Name); err != nil {
			return err
		}
	}
	if p.Expires <= p.Issued {
		return errors.New("expires before it was issued")
	}
	return nil
}

func expiredToken(t Token) error {
	return &tokenError{kind: ErrTokenExpired, msg: fmt.Sprintf("join token %s expired at %s: make a new one with ted pki token",
		t.ID, t.Expires.UTC().Format(time.RFC3339))}
}

// tokenUse is one line of DIR/tokens-used.jsonl.
type tokenUse struct {
	ID   string    `json:"id"`
	Name string    `json:"name,omitempty"` // the node it enrolled
	Used time.Time `json:"used"`
}

// ConsumeToken records that t was used, so that it can never be used
// again: t is what VerifyToken returned, with Name set to the node it
// enrolls when the token left the name open. It holds an exclusive lock
// on DIR/tokens-used.jsonl while it checks and appends, so that of several
// processes or goroutines using one token with one CA directory exactly
// one succeeds; the others get an error wrapping ErrTokenUsed. An expired
// token is refused (ErrTokenExpired), as it may have expired since it was
// verified.
func (ca *CA) ConsumeToken(t Token) error {
	if id, err := hex.DecodeString(t.ID); err != nil || len(id) != tokenIDLen {
		return invalidToken("id %q is not %d hexadecimal digits", t.ID, 2*tokenIDLen)
	}
	if !time.Now().Before(t.Expires) {
		return expiredToken(t)
	}
	path := filepath.Join(ca.Dir, tokenUsedName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, modePublic)
	if err != nil {
		return fmt.Errorf("record join token use: %w", err)
	}
	// Closing the file releases the lock.
	defer f.Close()
	if err := lockFile(f); err != nil {
		return fmt.Errorf("record join token use: lock %s: %w", path, err)
	}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		// Only lines that mention the ID are decoded, since the file grows
		// by a line for every node enrolled. A damaged line that does not
		// mention it cannot hide a use of this token.
		if !bytes.Contains(sc.Bytes(), []byte(t.ID)) {
			continue
		}
		var u tokenUse
		if err := json.Unmarshal(sc.Bytes(), &u); err != nil {
			// A damaged record could hide a use: refuse rather than guess.
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if u.ID != t.ID {
			continue
		}
		msg := fmt.Sprintf("join token %s was already used on %s", t.ID, u.Used.UTC().Format(time.RFC3339))
		if u.Name != "" {
			msg += " by " + u.Name
		}
		return &tokenError{kind: ErrTokenUsed, msg: msg + ": a join token enrolls one node once"}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	line, err := json.Marshal(tokenUse{ID: t.ID, Name: t.Name, Used: time.Now().UTC()})
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("record join token use in %s: %w", path, err)
	}
	// Durable before the certificate is handed out, so that a crash cannot
	// make a token usable again.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("record join token use in %s: %w", path, err)
	}
	return f.Close()
}

// ErrNotNodeRole refuses a join token for a role that is not a node's
// (RoleOperator).
var ErrNotNodeRole = errors.New("not a node role")

// tokenRole checks the role of a join token: a node's. An operator
// certificate is for a person or a tool, which has no parent to enroll
// with and renew through: it is issued with ted pki issue, on the CA
// host, and its key handed over like any other.
func tokenRole(s string) error {
	role, err := ParseRole(s)
	if err != nil {
		return err
	}
	if !role.IsNode() {
		return fmt.Errorf("role %s: a join token enrolls a node (publisher, distributor or subscriber), and an %s certificate is for a person or a tool: issue it with ted pki issue --role %s: %w",
			role, role, role, ErrNotNodeRole)
	}
	return nil
}
