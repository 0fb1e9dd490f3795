package schedule

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const nightsFile = "schedules:\n  nights:\n    windows:\n      - cron: \"0 22 * * *\"\n        duration: 8h\n"

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSourceReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "schedules.yaml")
	writeFile(t, path, nightsFile)
	if _, err := NewSource(path, []string{"nights", "days"}); err == nil || !strings.Contains(err.Error(), "days") {
		t.Fatalf("NewSource with an undefined required schedule: %v, want an error naming it", err)
	}
	src, err := NewSource(path, []string{"nights", "always"})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 23, 23, 0, 0, 0, time.UTC)
	if !src.Lookup("nights").OpenAt(at) {
		t.Fatal("nights closed at 23:00")
	}
	changed := src.Changed()

	// A bad edit keeps the schedules in use.
	writeFile(t, path, "schedules:\n  nights:\n    windows:\n      - cron: \"nope\"\n        duration: 8h\n")
	if err := src.Reload(); err == nil || !strings.Contains(err.Error(), "keeping") {
		t.Fatalf("Reload of a bad file: %v", err)
	}
	if !src.Lookup("nights").OpenAt(at) {
		t.Fatal("a bad reload changed the schedules in use")
	}
	// So does dropping a schedule the config names.
	writeFile(t, path, "schedules:\n  other: {always: true}\n")
	if err := src.Reload(); err == nil || !strings.Contains(err.Error(), "nights") {
		t.Fatalf("Reload without nights: %v", err)
	}
	select {
	case <-changed:
		t.Fatal("Changed fired on a failed reload")
	default:
	}

	writeFile(t, path, strings.Replace(nightsFile, "0 22", "0 10", 1))
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	<-changed
	if src.Lookup("nights").OpenAt(at) {
		t.Fatal("the reloaded nights (10:00 to 18:00) is still open at 23:00")
	}
}

func TestSourceWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "schedules.yaml")
	writeFile(t, path, nightsFile)
	src, err := NewSource(path, []string{"nights"})
	if err != nil {
		t.Fatal(err)
	}
	clock := NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Watch(ctx, 2*time.Second, clock, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	defer func() { cancel(); <-done }()

	changed := src.Changed()
	writeFile(t, path, strings.Replace(nightsFile, "duration: 8h", "duration: 10h", 1))
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		clock.BlockUntil(1) // Watch is waiting for its next look
		clock.Advance(2 * time.Second)
		select {
		case <-changed:
			at := time.Date(2026, 11, 23, 7, 0, 0, 0, time.UTC)
			if !src.Lookup("nights").OpenAt(at) {
				t.Fatal("Watch reloaded, but nights is not the 10h window")
			}
			return
		case <-time.After(10 * time.Millisecond):
			// Not yet: Watch may have looked before the write; look again.
		}
	}
	t.Fatal("Watch did not reload the changed file within 30 s")
}

func TestSourceWithoutFile(t *testing.T) {
	src, err := NewSource("", []string{Always})
	if err != nil {
		t.Fatal(err)
	}
	if !src.Lookup(Always).OpenAt(time.Now()) || src.Lookup(Never).OpenAt(time.Now()) {
		t.Fatal("built-ins wrong without a file")
	}
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSource("", []string{"nights"}); err == nil {
		t.Fatal("a named schedule without a file was accepted")
	}
}
