// Package pkitest holds test helpers for code that uses the pki package's
// file locks.
package pkitest

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// WaitLockWaiter returns once a process or goroutine waits for the flock
// on path (Linux lists waiters in /proc/locks with "->"): the test that
// holds the lock then knows the other side has reached it. It skips the
// test where /proc/locks cannot be read.
func WaitLockWaiter(t testing.TB, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	ino := fmt.Sprintf(":%d ", fi.Sys().(*syscall.Stat_t).Ino)
	for deadline := time.Now().Add(20 * time.Second); ; {
		data, err := os.ReadFile("/proc/locks")
		if err != nil {
			t.Skipf("cannot see waiters: %v", err)
		}
		for line := range strings.Lines(string(data)) {
			if strings.Contains(line, "->") && strings.Contains(line, "FLOCK") && strings.Contains(line, ino) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing waits for the lock on %s", path)
		}
		time.Sleep(time.Millisecond) // polling /proc/locks
	}
}
