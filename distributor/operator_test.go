package distributor_test

import (
	"errors"
	"strings"
	"testing"

	"ted/distributor"
	"ted/pki"
	"ted/transport"
)

// An operator certificate opens no session with a distributor, even one
// whose channels list its name or group as a publisher or a child.
func TestOperatorRefused(t *testing.T) {
	cfg := testConfig()
	cfg.Channels = map[string]distributor.Channel{
		"apps": {Publishers: []string{"alice", "group:ops"}, Children: []string{"alice", "group:ops", "al*"}},
	}
	n := startDistributor(t, cfg, nil)
	for _, id := range []transport.Identity{
		{Name: "alice", Role: pki.RoleOperator, Serial: "a1"},
		{Name: "bob", Role: pki.RoleOperator, Groups: []string{"ops"}, Serial: "b0"},
	} {
		err := n.d.Accept(id)
		if !errors.Is(err, transport.ErrUnauthorized) || !strings.Contains(err.Error(), `role "operator"`) {
			t.Errorf("%s (operator): %v, want refused for its role", id.Name, err)
		}
	}
}
