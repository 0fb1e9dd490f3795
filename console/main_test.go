package console

import (
	"testing"

	"go.uber.org/goleak"
)

// The event streams run on the server's goroutines and must end with
// their requests: a test that leaves one behind fails here.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
