package transport

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any of them leaves a goroutine
// running: sessions, listeners and streams must all end with Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
