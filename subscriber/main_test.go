package subscriber

import (
	"testing"

	"go.uber.org/goleak"
)

// The daemon's goroutines live in this package; none may outlive a test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
