package publisher

import (
	"testing"

	"go.uber.org/goleak"
)

// Push starts goroutines to serve chunks and wait for the answer; none may
// outlive the push.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
