package cluster

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startGossip(t *testing.T, cluster, node string, key []byte, join ...string) (*Gossip, string) {
	t.Helper()
	addr := freeAddr(t)
	g, err := StartGossip(GossipConfig{Cluster: cluster, Node: node, Bind: addr, Join: join, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Leave() })
	return g, addr
}

// names lists the members g sees, waiting up to 10 s for want.
func seen(t *testing.T, g *Gossip, want []string) []string {
	t.Helper()
	var names []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		names = names[:0]
		for _, m := range g.Members() {
			names = append(names, m.Name)
		}
		slices.Sort(names)
		if slices.Equal(names, want) || time.Now().After(deadline) {
			return names
		}
		select {
		case <-g.Changed():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestGossip(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	a, addrA := startGossip(t, "web", "a", key)
	b, _ := startGossip(t, "web", "b", key, addrA)
	if got := seen(t, a, []string{"a", "b"}); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("a sees %v", got)
	}
	// Meta travels.
	b.SetMeta(Meta{Priority: 20, Healthy: true, Active: true, Ready: true, Epoch: 9})
	deadline := time.Now().Add(10 * time.Second)
	for activeOf(a.Members()) != "b" {
		if time.Now().After(deadline) {
			t.Fatalf("a never saw b's meta: %+v", a.Members())
		}
		time.Sleep(50 * time.Millisecond) // gossip spreads on its own schedule
	}

	// A node with the wrong key, or of another cluster, is never seen.
	wrong, _ := startGossip(t, "web", "w", bytes.Repeat([]byte{8}, 32), addrA)
	other, _ := startGossip(t, "db", "o", key, addrA)
	// For as long as their join attempts take (a few rounds), a sees no
	// stranger.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if got := a.Members(); len(got) != 2 {
			t.Fatalf("a sees %+v: a stranger got in", got)
		}
	}
	for _, g := range []*Gossip{wrong, other} {
		if got := g.Members(); len(got) != 1 {
			t.Errorf("%s sees %v", g.cfg.Node, got)
		}
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if key, err := LoadKey(write("good", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n")); err != nil || len(key) != 32 {
		t.Errorf("good key: %d bytes, %v", len(key), err)
	}
	for name, content := range map[string]string{"short": "BwcHBw==", "text": "not base64!"} {
		if _, err := LoadKey(write(name, content)); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, name)) {
			t.Errorf("%s key: %v; want an error naming the file", name, err)
		}
	}
	if _, err := LoadKey(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "secret_file") {
		t.Errorf("missing key: %v", err)
	}
}

// TestGossipNameConflict: a second node with a name already in the
// cluster is refused by memberlist, and the node that sees the conflict
// will not be elected and says why.
func TestGossipNameConflict(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	a, addrA := startGossip(t, "web", "a", key)
	b, _ := startGossip(t, "web", "b", key, addrA)
	if got := seen(t, a, []string{"a", "b"}); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("a sees %v", got)
	}
	dup, _ := startGossip(t, "web", "b", key, addrA)
	deadline := time.Now().Add(10 * time.Second)
	for b.Problem() == nil && dup.Problem() == nil {
		if time.Now().After(deadline) {
			t.Fatal("neither node named b noticed the other")
		}
		time.Sleep(50 * time.Millisecond) // polling: memberlist reports on its own schedule
	}
	for _, g := range []*Gossip{b, dup} {
		if err := g.Problem(); err != nil && !strings.Contains(err.Error(), `uses this node's name "b"`) {
			t.Errorf("b: %v", err)
		}
	}
	if err := a.Problem(); err != nil {
		t.Errorf("a, not named b, stands down: %v", err)
	}
	// The node with the problem is never elected.
	for _, g := range []*Gossip{b, dup} {
		if g.Problem() != nil {
			for _, m := range g.Members() {
				if m.Name == "b" && m.Meta.Healthy {
					t.Errorf("a node named b with a name conflict counts itself healthy")
				}
			}
		}
	}
}
