package fleet

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Kind is what an event says happened.
type Kind string

// Event kinds.
const (
	KindPublished  Kind = "published"
	KindReceived   Kind = "received"
	KindExtracted  Kind = "extracted"
	KindBlocked    Kind = "blocked"
	KindFailed     Kind = "failed"
	KindRolledBack Kind = "rolled_back"
	KindFirstSeen  Kind = "first_seen"
	KindStale      Kind = "stale"
	// KindStopped: a rollout in waves stopped, its first wave failed.
	KindStopped Kind = "rollout_stopped"
)

// Event is one line of the history.
type Event struct {
	Time     time.Time `json:"time"`
	Kind     Kind      `json:"kind"`
	Node     string    `json:"node"`
	Dist     string    `json:"dist,omitempty"`
	Revision uint64    `json:"revision,omitempty"`
	Version  string    `json:"version,omitempty"`
	// Detail is the reason, the error, or where from.
	Detail string `json:"detail,omitempty"`
}

// HistoryConfig bounds a History.
type HistoryConfig struct {
	// Dir holds the history: one file of JSON lines per UTC day,
	// YYYY-MM-DD.jsonl.
	Dir string
	// MaxAge and MaxBytes bound it: whole days older than MaxAge, and the
	// oldest days while the files add up to more than MaxBytes, are
	// removed.
	MaxAge   time.Duration
	MaxBytes int64
	Log      *slog.Logger
}

// Defaults of HistoryConfig.
const (
	DefaultHistoryMaxAge   = 90 * 24 * time.Hour
	DefaultHistoryMaxBytes = 256 << 20
)

// History is a node's event history: appended to, read by reports.
// Writes are buffered and flushed by Flush (every second by the daemon)
// and Close: a crash loses at most the last second's events.
type History struct {
	cfg HistoryConfig

	mu   sync.Mutex
	day  string
	f    *os.File
	w    *bufio.Writer
	size int64 // of the files, pruned or not, as last seen
	err  error // the last write error, logged once
	// pruned is when the files were last pruned for size: a day larger
	// than MaxBytes alone cannot be pruned, and is not looked at again
	// at every event.
	pruned time.Time
}

// OpenHistory opens (creating) the history in cfg.Dir.
func OpenHistory(cfg HistoryConfig) (*History, error) {
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultHistoryMaxAge
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultHistoryMaxBytes
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	h := &History{cfg: cfg}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.pruneLocked(time.Now()); err != nil {
		return nil, err
	}
	return h, nil
}

// Add appends events. A write that fails (a full disk) loses those
// events; the file is opened again for the next, and the failure logged
// once until a write succeeds.
func (h *History) Add(evs []Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range evs {
		if err := h.addLocked(ev); err != nil {
			h.failedLocked(err)
			return
		}
	}
	h.err = nil
}

// failedLocked logs a write failure once, and drops the file: a
// bufio.Writer refuses every write after its first error.
func (h *History) failedLocked(err error) {
	if h.err == nil {
		h.cfg.Log.Warn("history: events not written; trying again with the next", "dir", h.cfg.Dir, "err", err)
	}
	h.err = err
	if h.f != nil {
		h.f.Close()
		h.f, h.w, h.day = nil, nil, ""
	}
}

func (h *History) addLocked(ev Event) error {
	day := ev.Time.UTC().Format(time.DateOnly)
	if day != h.day || h.f == nil {
		if err := h.closeLocked(); err != nil {
			return err
		}
		f, err := os.OpenFile(filepath.Join(h.cfg.Dir, day+".jsonl"), os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o640)
		if err != nil {
			return err
		}
		if err := endLine(f); err != nil {
			f.Close()
			return err
		}
		h.f, h.w, h.day = f, bufio.NewWriterSize(f, 64<<10), day
		if err := h.pruneLocked(ev.Time); err != nil {
			return err
		}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	n, err := h.w.Write(append(b, '\n'))
	h.size += int64(n)
	if err != nil {
		return err
	}
	if h.size > h.cfg.MaxBytes && time.Since(h.pruned) > time.Minute {
		h.pruned = time.Now()
		return h.pruneLocked(ev.Time)
	}
	return nil
}

// endLine ends the last line of f if a crash cut it short, so the next
// event starts a line of its own.
func endLine(f *os.File) error {
	info, err := f.Stat()
	if err != nil || info.Size() == 0 {
		return err
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, info.Size()-1); err != nil {
		return err
	}
	if last[0] != '\n' {
		_, err = f.Write([]byte{'\n'})
	}
	return err
}

// Flush writes out the buffered events; a failure is logged once (see
// Add) and returned.
func (h *History) Flush() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.w == nil {
		return nil
	}
	if err := h.w.Flush(); err != nil {
		h.failedLocked(err)
		return err
	}
	return nil
}

// Close flushes and closes the history.
func (h *History) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closeLocked()
}

func (h *History) closeLocked() error {
	if h.f == nil {
		return nil
	}
	err := h.w.Flush()
	if cerr := h.f.Close(); err == nil {
		err = cerr
	}
	h.f, h.w, h.day = nil, nil, ""
	return err
}

// days lists the day files, oldest first, with their sizes.
func (h *History) days() ([]string, map[string]int64, error) {
	entries, err := os.ReadDir(h.cfg.Dir)
	if err != nil {
		return nil, nil, fmt.Errorf("history: %w", err)
	}
	var names []string
	sizes := map[string]int64{}
	for _, e := range entries {
		day, ok := strings.CutSuffix(e.Name(), ".jsonl")
		if !ok || e.IsDir() {
			continue
		}
		if _, err := time.Parse(time.DateOnly, day); err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, nil, err
		}
		names = append(names, day)
		sizes[day] = info.Size()
	}
	slices.Sort(names)
	return names, sizes, nil
}

// pruneLocked removes days older than MaxAge, then the oldest days while
// the total is above MaxBytes (never the day being written).
func (h *History) pruneLocked(now time.Time) error {
	if h.w != nil {
		if err := h.w.Flush(); err != nil {
			return err
		}
	}
	days, sizes, err := h.days()
	if err != nil {
		return err
	}
	var total int64
	for _, d := range days {
		total += sizes[d]
	}
	oldest := now.Add(-h.cfg.MaxAge).UTC().Format(time.DateOnly)
	for _, d := range days {
		if d == h.day || d >= oldest && total <= h.cfg.MaxBytes {
			break
		}
		if err := os.Remove(filepath.Join(h.cfg.Dir, d+".jsonl")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("history: %w", err)
		}
		total -= sizes[d]
	}
	h.size = total
	return nil
}

// Events returns the events at or after since that keep returns true
// for, oldest first, at most limit (the latest ones) if limit > 0.
func (h *History) Events(since time.Time, keep func(*Event) bool, limit int) ([]Event, error) {
	if err := h.Flush(); err != nil {
		return nil, err
	}
	days, _, err := h.days()
	if err != nil {
		return nil, err
	}
	first := since.UTC().Format(time.DateOnly)
	var out []Event
	for _, d := range days {
		if d < first {
			continue
		}
		if err := readDay(filepath.Join(h.cfg.Dir, d+".jsonl"), func(ev *Event) {
			if !ev.Time.Before(since) && (keep == nil || keep(ev)) {
				out = append(out, *ev)
				if limit > 0 && len(out) > 2*limit {
					out = append(out[:0], out[len(out)-limit:]...)
				}
			}
		}); err != nil {
			return nil, err
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

// readDay reads one day's events; a line that does not decode (the tail
// of a crash) is skipped.
func readDay(name string, fn func(*Event)) error {
	f, err := os.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("history: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev Event
		if json.Unmarshal(sc.Bytes(), &ev) == nil {
			fn(&ev)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("history: %s: %w", name, err)
	}
	return nil
}
