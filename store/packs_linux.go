//go:build linux

package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing a range of a pack to disk
// now, without waiting. Left to itself, the kernel lets dirty pages pile up
// and later makes the writer pay for their writeback; started early, the
// fsync before indexing finds little left to do.
func startWriteback(f *os.File, off, n int64) {
	// Advice only: an error changes nothing that fsync will not catch.
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
