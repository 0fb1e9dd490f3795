package transport

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"ted/distribution"
)

// Errors of the protocol. A peer's refusal arrives as an *Error whose Unwrap
// gives one of these (or a distribution sentinel), so callers test it with
// errors.Is whichever side it came from.
var (
	// ErrProtocol: a malformed or unexpected message.
	ErrProtocol = errors.New("protocol error")
	// ErrUnauthorized: the peer's name or role may not do what it asked,
	// for example publish into a channel it is not listed for.
	ErrUnauthorized = errors.New("not authorised")
	// ErrRollback: an offered revision is older than one already held.
	ErrRollback = errors.New("older than a revision already held")
	// ErrNotFound: no such revision or chunk.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable: the peer cannot serve it now (its parent is
	// unreachable, it is short of disk, it is stopping); try again later.
	ErrUnavailable = errors.New("unavailable")
	// ErrInternal: the peer failed; its log says why.
	ErrInternal = errors.New("internal error")
)

// Code is an error's number on the wire.
type Code uint16

// Wire error codes. Numbers are part of the protocol: never reuse one.
const (
	CodeInternal     Code = 1
	CodeProtocol     Code = 2
	CodeUnauthorized Code = 3
	CodeUntrusted    Code = 4
	CodeBadSignature Code = 5
	CodeRollback     Code = 6
	CodeNotFound     Code = 7
	CodeUnavailable  Code = 8
	CodeCorrupt      Code = 9
)

// codes maps every wire code to its sentinel, both ways.
var codes = []struct {
	code Code
	err  error
}{
	{CodeProtocol, ErrProtocol},
	{CodeUnauthorized, ErrUnauthorized},
	{CodeUntrusted, distribution.ErrUntrustedKey},
	{CodeBadSignature, distribution.ErrBadSignature},
	{CodeRollback, ErrRollback},
	{CodeNotFound, ErrNotFound},
	{CodeNotFound, distribution.ErrChunkMissing},
	{CodeUnavailable, ErrUnavailable},
	{CodeCorrupt, distribution.ErrChunkCorrupt},
	{CodeInternal, ErrInternal},
}

// Error is an error as it travels: a code and a message for people.
type Error struct {
	Code    Code   `cbor:"1,keyasint"`
	Message string `cbor:"2,keyasint"`
	// RetryAt, if set (Unix seconds), is when asking again can succeed: a
	// send window's next opening.
	RetryAt int64 `cbor:"3,keyasint,omitempty"`
}

// ClosedUntil says that something waits for a window: a channel's send
// window is closed and opens at At (zero: never). It is ErrUnavailable, and
// travels with At as the wire error's RetryAt.
type ClosedUntil struct {
	At     time.Time
	Reason string
}

func (e *ClosedUntil) Error() string {
	if e.At.IsZero() {
		return e.Reason + "; no window opens"
	}
	return fmt.Sprintf("%s; the next window opens at %s", e.Reason, e.At.UTC().Format(time.RFC3339))
}

// Unwrap makes a ClosedUntil an ErrUnavailable.
func (e *ClosedUntil) Unwrap() error { return ErrUnavailable }

// RetryAt returns when a peer said to ask again, if err carries that.
func RetryAt(err error) (time.Time, bool) {
	var wire *Error
	if errors.As(err, &wire) && wire.RetryAt > 0 {
		return time.Unix(wire.RetryAt, 0), true
	}
	var closed *ClosedUntil
	if errors.As(err, &closed) && !closed.At.IsZero() {
		return closed.At, true
	}
	return time.Time{}, false
}

// ErrorOf turns err into its wire form: the code of the first sentinel it
// wraps (CodeInternal if none) and its text. This is the one place errors
// become codes.
func ErrorOf(err error) *Error {
	var wire *Error
	if errors.As(err, &wire) {
		return wire
	}
	// The peer refuses text that is not UTF-8 (an error may quote a file
	// name), and the cut must not split a rune.
	msg := strings.ToValidUTF8(err.Error(), "\uFFFD")
	if len(msg) > maxText {
		msg = strings.ToValidUTF8(msg[:maxText], "")
	}
	var retry int64
	var closed *ClosedUntil
	if errors.As(err, &closed) && !closed.At.IsZero() {
		retry = closed.At.Unix()
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return &Error{Code: c.code, Message: msg, RetryAt: retry}
		}
	}
	return &Error{Code: CodeInternal, Message: msg, RetryAt: retry}
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel of e's code, so errors.Is works across the
// wire.
func (e *Error) Unwrap() error {
	for _, c := range codes {
		if c.code == e.Code {
			return c.err
		}
	}
	return ErrInternal
}

// remote wraps an error received from peer.
func remote(peer string, e *Error) error {
	return fmt.Errorf("%s refused: %w", peer, e)
}
