package swpkg

import (
	"testing"

	"go.uber.org/goleak"
)

// Command prerequisites start processes and exec's copying goroutines; none
// may outlive a check.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
