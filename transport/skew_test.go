package transport

import (
	"context"
	"errors"
	"strings"
	"testing"

	"ted/pki"
)

func TestCheckAgents(t *testing.T) {
	for _, tc := range []struct {
		ours, theirs string
		ok           bool
	}{
		{"1.4.0", "1.4.2", true},
		{"1.4.0", "1.3.9", true},
		{"1.4.0", "v1.5.0-rc1", true},
		{"1.4.0", "1.2.0", false},
		{"1.4.0", "1.6.1", false},
		{"1.4.0", "2.4.0", false},
		{"0.0.0+164.g012ae58", "0.0.0+170.gabc", true},
		{"dev", "1.0.0", true},
		{"1.4.0", "test-agent", true},
	} {
		err := CheckAgents("dist-1", tc.ours, "web-01", tc.theirs)
		if (err == nil) != tc.ok {
			t.Errorf("%s with %s: %v, want ok %v", tc.ours, tc.theirs, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, ErrIncompatible) || !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.ours) || !strings.Contains(err.Error(), tc.theirs)) {
			t.Errorf("%s with %s: %v does not name both versions", tc.ours, tc.theirs, err)
		}
	}
	err := CheckAgents("dist-1", "1.4.0", "web-01", "1.1.0")
	if err == nil || !strings.Contains(err.Error(), "upgrade web-01 to 1.3 or later") {
		t.Errorf("the remedy: %v", err)
	}
}

// A child two minor versions behind is refused at the hello, and both
// sides say why, naming both versions.
func TestHelloRefusesVersionSkew(t *testing.T) {
	child, parent := NewPipe(Identity{Name: "web-01", Role: pki.RoleSubscriber}, Identity{Name: "dist-1", Role: pki.RoleDistributor})
	defer child.Close(nil)
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		_, _, err := ServerHello(ctx, parent, &Welcome{Name: "dist-1", Agent: "1.4.0"}, func(*Hello) error { return nil })
		done <- err
	}()
	_, _, err := ClientHello(ctx, child, &Hello{Name: "web-01", Agent: "1.2.0"})
	if err == nil || !strings.Contains(err.Error(), "dist-1 runs ted 1.4.0 and web-01 runs ted 1.2.0") {
		t.Errorf("child: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrIncompatible) {
		t.Errorf("parent: %v", err)
	}
}
