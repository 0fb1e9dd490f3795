package transport

import (
	"strings"
	"testing"

	"ted/pki"
)

// The listener picks the newest version both ends speak: ted/1.3 with a
// node of this version, ted/1 with one that only speaks ted/1 (which is
// admitted, not refused). Both ends see the same protocol.
func TestQUICProtocolNegotiated(t *testing.T) {
	p := newTestPKI(t)
	l := testListen(t, p.issue(t, "dist-1", pki.RoleDistributor), nil, nil)
	client := p.issue(t, "web-01", pki.RoleSubscriber)
	for _, tc := range []struct {
		speaks     string
		want       string
		revocation bool
		subtree    bool
		waves      bool
	}{
		{ALPN, "ted/1.3", true, true, true},
		{ALPN12, "ted/1.2", true, true, false},
		{ALPN11, "ted/1.1", true, false, false},
		{ALPN1, "ted/1", false, false, false},
	} {
		ctx := testContext(t)
		acc := acceptAsync(ctx, l)
		dialled, err := dial(ctx, l.Addr().String(), client, pki.RoleDistributor, QUICConfig{}, tc.speaks)
		if err != nil {
			t.Fatalf("a node speaking up to %s: %v", tc.speaks, err)
		}
		res := <-acc
		if res.err != nil {
			t.Fatal(res.err)
		}
		if got := dialled.Protocol(); got != tc.want {
			t.Errorf("dialler speaking up to %s: protocol %q, want %q", tc.speaks, got, tc.want)
		}
		if got := res.sess.Protocol(); got != tc.want {
			t.Errorf("listener, dialler speaking up to %s: protocol %q, want %q", tc.speaks, got, tc.want)
		}
		if CarriesRevocations(res.sess) != tc.revocation {
			t.Errorf("%s: CarriesRevocations = %v", tc.want, !tc.revocation)
		}
		if CarriesSubtree(res.sess) != tc.subtree {
			t.Errorf("%s: CarriesSubtree = %v", tc.want, !tc.subtree)
		}
		if CarriesWaves(res.sess) != tc.waves {
			t.Errorf("%s: CarriesWaves = %v", tc.want, !tc.waves)
		}
		_ = dialled.Close(nil)
		_ = res.sess.Close(nil)
	}
	// Pipes speak the newest unless told otherwise.
	a, b := NewPipe(Identity{Name: "a"}, Identity{Name: "b"})
	defer a.Close(nil)
	if a.Protocol() != ALPN || b.Protocol() != ALPN {
		t.Errorf("pipe speaks %q, %q; want %q", a.Protocol(), b.Protocol(), ALPN)
	}
	old, _ := NewPipeSpeaking(Identity{Name: "a"}, Identity{Name: "b"}, ALPN1)
	defer old.Close(nil)
	if CarriesRevocations(old) || CarriesSubtree(old) || CarriesWaves(old) {
		t.Error("a ted/1 pipe carries revocations or subtrees")
	}
}

// What a dialler offers: its version and every older one of ours; a
// foreign or enrollment protocol alone. The refusal names them.
func TestOffers(t *testing.T) {
	for alpn, want := range map[string]string{
		ALPN:       "ted/1.3 ted/1.2 ted/1.1 ted/1",
		ALPN12:     "ted/1.2 ted/1.1 ted/1",
		ALPN11:     "ted/1.1 ted/1",
		ALPN1:      "ted/1",
		"ted/2":    "ted/2",
		EnrollALPN: EnrollALPN,
	} {
		if got := strings.Join(offers(alpn), " "); got != want {
			t.Errorf("offers(%q) = %q, want %q", alpn, got, want)
		}
	}
	err, quiet := alpnMismatch("10.0.0.1:1", []string{"h3"})
	if !quiet || !strings.Contains(err.Error(), "does not speak ted/1.3, ted/1.2, ted/1.1, ted/1") {
		t.Errorf("a foreign protocol: %v (quiet %v)", err, quiet)
	}
}

// A hello's list number is checked: decimal digits only.
func TestHelloCRLNumber(t *testing.T) {
	for _, tc := range []struct {
		number string
		ok     bool
	}{
		{"", true}, {"1796301060", true}, {"-1", false}, {"1e9", false}, {strings.Repeat("9", 50), false},
	} {
		h := &Hello{Name: "web-01", Agent: "ted", CRLNumber: tc.number}
		if err := h.validate(); (err == nil) != tc.ok {
			t.Errorf("CRLNumber %q: %v", tc.number, err)
		}
	}
}
