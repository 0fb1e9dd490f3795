//go:build !unix

package store

import "io/fs"

// dirLock does nothing here: badger's own directory lock keeps a second
// process out, and Open recognises its error.
type dirLock struct{}

func lockDir(string) (*dirLock, error) { return &dirLock{}, nil }

func (*dirLock) release() error { return nil }

// allocatedBytes is the file size where blocks are not known.
func allocatedBytes(fi fs.FileInfo) int64 { return fi.Size() }

// FreeBytes is not known here: it reports no limit.
func FreeBytes(string) (int64, error) { return 1<<63 - 1, nil }
