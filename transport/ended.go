package transport

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/quic-go/quic-go"
)

// Ended reports whether err only says that a session or stream ended the
// ordinary way — the peer or this side closed it without a fault, or ctx
// was cancelled — so callers log it quietly, not as a failure.
func Ended(err error) bool {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) {
		return true
	}
	var app *quic.ApplicationError
	if errors.As(err, &app) && app.ErrorCode == codeClosed {
		return true
	}
	var stream *quic.StreamError
	return errors.As(err, &stream) && stream.ErrorCode == streamClosed
}
