package schedule

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Source is a schedule file that a daemon reloads while it runs: on SIGHUP
// and when the file changes. A reload that fails — the file does not parse,
// or lacks a schedule the daemon's config names — keeps the schedules in
// use and returns the error, so a bad edit never stops deliveries.
type Source struct {
	path     string
	required []string
	file     atomic.Pointer[File]

	mu      sync.Mutex
	stamp   fileStamp
	changed chan struct{}
}

// fileStamp tells whether a file changed since it was read.
type fileStamp struct {
	mod  time.Time
	size int64
}

// NewSource loads path (none: only the built-in always and never) and
// checks that every name in required is defined; errors name the file and
// the schedule.
func NewSource(path string, required []string) (*Source, error) {
	s := &Source{path: path, required: required, changed: make(chan struct{})}
	f, stamp, err := s.read()
	if err != nil {
		return nil, err
	}
	s.file.Store(f)
	s.stamp = stamp
	return s, nil
}

func (s *Source) read() (*File, fileStamp, error) {
	f := &File{Name: s.path, Schedules: map[string]*Schedule{}}
	var stamp fileStamp
	if s.path != "" {
		info, err := os.Stat(s.path)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = fmt.Errorf("%s: %w", pe.Path, pe.Err) // not "stat FILE"
			}
			return nil, stamp, err
		}
		stamp = fileStamp{info.ModTime(), info.Size()}
		if f, err = Load(s.path); err != nil {
			return nil, stamp, err
		}
	}
	for _, name := range s.required {
		if _, err := f.Lookup(name); err != nil {
			return nil, stamp, err
		}
	}
	return f, stamp, nil
}

// Lookup returns the current schedule of a name checked at NewSource; an
// unknown name (a caller's bug) is never open.
func (s *Source) Lookup(name string) *Schedule {
	if sch, err := s.file.Load().Lookup(name); err == nil {
		return sch
	}
	never, _ := s.file.Load().Lookup(Never)
	return never
}

// Changed returns a channel closed at the next successful reload.
func (s *Source) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Reload reads the file again. On error the schedules in use stay.
func (s *Source) Reload() error {
	if s.path == "" {
		return nil
	}
	f, stamp, err := s.read()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stamp = stamp // a bad file is not retried until it changes again
	if err != nil {
		return fmt.Errorf("reload schedules, keeping those in use: %w", err)
	}
	s.file.Store(f)
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// Watch reloads the file when it changes, looking every interval (a stat:
// no file-notification dependency, and cheap at a few seconds), until ctx
// ends. Reload errors are logged, never fatal.
func (s *Source) Watch(ctx context.Context, interval time.Duration, clock Clock, log *slog.Logger) {
	if s.path == "" {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-clock.After(interval):
		}
		info, err := os.Stat(s.path)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				log.Warn("schedules: stat", "file", s.path, "err", err)
			}
			continue
		}
		s.mu.Lock()
		same := s.stamp == fileStamp{info.ModTime(), info.Size()}
		s.mu.Unlock()
		if same {
			continue
		}
		if err := s.Reload(); err != nil {
			log.Error("schedule file changed but is not valid", "file", s.path, "err", err)
			continue
		}
		log.Info("schedule file reloaded", "file", s.path, "schedules", s.file.Load().Names())
	}
}
