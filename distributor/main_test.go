package distributor_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The distributor starts a goroutine per session and several per child;
// none may outlive Run.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
