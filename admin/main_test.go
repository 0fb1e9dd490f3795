package admin_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Serve starts a goroutine per listener and the client one per request;
// a stopped server and a finished call must leave none behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
