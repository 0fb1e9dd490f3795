package main

import (
	"context"
	"errors"

	"ted/admin"
	"ted/distribution"
	"ted/store"
	"ted/transport"
)

// usageError marks a command line the user must correct (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// verifyError marks a verification failure found by a check that is not one
// of distribution's own sentinel errors (exit 3).
type verifyError struct{ err error }

func (e verifyError) Error() string { return e.err.Error() }
func (e verifyError) Unwrap() error { return e.err }

// exitCode maps an error to its documented exit code (0 ok, 1 error, 2 usage,
// 3 verification failed, 4 not found, 130 interrupted): the one place that
// does so.
func exitCode(err error) int {
	var usage usageError
	var verify verifyError
	var status exitStatus
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &status):
		return int(status)
	case errors.As(err, &usage):
		return exitUsage
	case errors.As(err, &verify),
		errors.Is(err, distribution.ErrUntrustedKey),
		errors.Is(err, distribution.ErrBadSignature),
		errors.Is(err, distribution.ErrChunkCorrupt),
		// A revision in the store without all of its chunks is a store
		// that fails verification, as dist verify reports it.
		errors.Is(err, distribution.ErrChunkMissing):
		return exitVerify
	case errors.Is(err, store.ErrNotFound), errors.Is(err, transport.ErrNotFound), errors.Is(err, admin.ErrNotFound):
		return exitNotFound
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	}
	return exitError
}
