package distribution

import (
	"testing"

	"go.uber.org/goleak"
)

// Build starts a goroutine per build (the chunk storer); none may outlive it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
