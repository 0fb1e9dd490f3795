package enroll

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any of them leaves a goroutine
// running: listeners, enrollment connections and their sockets must end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
