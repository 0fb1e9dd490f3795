package store_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Badger starts goroutines; Close must stop every one of them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
