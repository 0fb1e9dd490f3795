package transport

import (
	"context"
	"testing"
	"time"
)

// TestOfferQueueRetryOncePerDistribution checks that two failed copies of
// an offer retry once, pushing the latest one given.
func TestOfferQueueRetryOncePerDistribution(t *testing.T) {
	first, _ := signedRevision(t)
	second, _ := signedRevision(t)
	m, err := first.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	q := NewOfferQueue()
	q.RetryIn(t.Context(), m.Name, first, time.Millisecond)
	q.RetryIn(t.Context(), m.Name, second, time.Millisecond)
	q.Wait()
	done, cancel := context.WithCancel(t.Context())
	cancel()
	got := q.Next(done)
	if got != second {
		t.Fatalf("the retry pushed %p, want the latest offer given %p", got, second)
	}
	if extra := q.Next(done); extra != nil {
		t.Fatal("two retries of one distribution pushed two offers")
	}
}
