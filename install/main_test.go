package install

import (
	"testing"

	"go.uber.org/goleak"
)

// Commands' output is read by goroutines of this package; none may
// outlive a test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
