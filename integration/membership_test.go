//go:build linux

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ted/pki"
)

// issueGroups makes NAME's certificate, role subscriber, bound to groups,
// and returns its files as a subscriber's tls block names them.
func (nw *network) issueGroups(name string, groups ...string) *tlsSpec {
	nw.t.Helper()
	if _, err := pki.IssueSpec(nw.pki, pki.Spec{Name: name, Role: pki.RoleSubscriber, Groups: groups}, false); err != nil {
		nw.t.Fatal(err)
	}
	return &tlsSpec{ca: "pki/ca.crt", cert: "pki/" + name + ".crt", key: "pki/" + name + ".key"}
}

// serial is the serial number of NAME's certificate, as revocation lists
// name it.
func (nw *network) serial(name string) string {
	nw.t.Helper()
	cert, err := pki.LoadCertificate(filepath.Join(nw.pki, name+".crt"))
	if err != nil {
		nw.t.Fatal(err)
	}
	return pki.SerialHex(cert)
}

// revoke revokes the certificates of names with `ted pki revoke`, which
// rewrites pki/revoked.crl, and returns the new list's number. Without
// names it makes the CA's first, empty list (through the pki package: the
// command wants something to revoke).
func (nw *network) revoke(names ...string) string {
	nw.t.Helper()
	if len(names) == 0 {
		ca, err := pki.LoadCA(nw.pki)
		if err != nil {
			nw.t.Fatal(err)
		}
		r, err := ca.Revoke(nil)
		if err != nil {
			nw.t.Fatal(err)
		}
		return r.Number.String()
	}
	var res struct {
		Revoked []struct {
			Name   string `json:"name"`
			Serial string `json:"serial"`
		} `json:"revoked"`
		Number string `json:"number"`
	}
	tedJSON(nw.t, &res, append([]string{"pki", "revoke", "--dir", nw.pki}, names...)...)
	if len(res.Revoked) != len(names) {
		nw.t.Fatalf("ted pki revoke %v revoked %+v", names, res.Revoked)
	}
	for i, r := range res.Revoked {
		if r.Name != names[i] || r.Serial != nw.serial(names[i]) {
			nw.t.Errorf("ted pki revoke %s: revoked %+v, want serial %s", names[i], r, nw.serial(names[i]))
		}
	}
	return res.Number
}

// rewriteConfig writes the node's config as n.values says, keeping its
// ports: an edit of a running daemon's file.
func (n *node) rewriteConfig() {
	n.nw.t.Helper()
	data, err := json.MarshalIndent(n.values, "", "  ")
	if err != nil {
		n.nw.t.Fatal(err)
	}
	// Through a rename, as editors do, so the daemon never reads half a
	// file.
	tmp := n.config + ".new"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		n.nw.t.Fatal(err)
	}
	if err := os.Rename(tmp, n.config); err != nil {
		n.nw.t.Fatal(err)
	}
}

// setChildren sets a channel's children in the node's config values.
func (n *node) setChildren(channel string, children ...any) {
	ch := n.values["channels"].(map[string]any)[channel].(map[string]any)
	ch["children"] = children
}

// hup sends SIGHUP to the running daemon.
func (n *node) hup() {
	n.nw.t.Helper()
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		n.nw.t.Fatalf("%s is not running", n.name)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		n.nw.t.Fatal(err)
	}
}

// certStatus is what status says of certificates.
type certStatus struct {
	Certificate *struct {
		Serial   string    `json:"serial"`
		Expires  time.Time `json:"expires"`
		DaysLeft int       `json:"days_left"`
	} `json:"certificate"`
	Children []struct {
		Name      string    `json:"name"`
		Serial    string    `json:"serial"`
		Groups    []string  `json:"groups"`
		Expires   time.Time `json:"certificate_expires"`
		Connected bool      `json:"connected"`
	} `json:"children"`
}

// TestMembershipGroupsAndPatterns: a channel lists its children by group
// and by name pattern; a child listed by neither is refused, and both ends
// say against what.
func TestMembershipGroupsAndPatterns(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"group:web", "app-*"}},
	}})
	web := nw.subscriber("web-1", subscriberSpec{parents: []string{dist.addr}, tls: nw.issueGroups("web-1", "web")})
	app := nw.subscriber("app-1", subscriberSpec{parents: []string{dist.addr}})
	db := nw.subscriber("db-1", subscriberSpec{parents: []string{dist.addr}, tls: nw.issueGroups("db-1", "db")})

	nw.build("1.0.0")
	nw.publish("app", dist)
	web.waitState(1, "extracted")
	app.waitState(1, "extracted")

	// The child is told it is not listed; only the distributor's log
	// says what it was checked against.
	refusal := "db-1 (groups: db) is not a child of any channel of dist-1"
	if line := db.waitLog("parent unreachable", refusal); strings.Contains(line, "group:web") {
		t.Errorf("db-1 was told what dist-1 lists: %s", line)
	}
	dist.waitLog("refused peer", "db-1", refusal)
	dist.waitLog("child listed by no channel", "db-1 (groups: db)", "web [group:web, app-*]")
	if st, err := db.subscriberStatus(); err != nil || len(st.Distributions) != 0 {
		t.Errorf("db-1 status: %+v, %v; want nothing received", st, err)
	}

	// Status shows each child's certificate: serial, groups, expiry; and
	// the node's own.
	var st certStatus
	tedJSON(t, &st, "distributor", "status", "--config", dist.config)
	if st.Certificate == nil || st.Certificate.DaysLeft < 700 || st.Certificate.Serial != nw.serial("dist-1") {
		t.Errorf("dist-1's own certificate in status: %+v", st.Certificate)
	}
	for _, c := range st.Children {
		switch c.Name {
		case "web-1":
			if c.Serial != nw.serial("web-1") || len(c.Groups) != 1 || c.Groups[0] != "web" || time.Until(c.Expires) < 700*24*time.Hour {
				t.Errorf("web-1 in status: %+v", c)
			}
		case "app-1":
			if c.Serial != nw.serial("app-1") || len(c.Groups) != 0 {
				t.Errorf("app-1 in status: %+v", c)
			}
		default:
			t.Errorf("child %s in status: it was refused", c.Name)
		}
	}
	text := mustTed(t, "distributor", "status", "--config", dist.config).stdout
	if !strings.Contains(text, "CERT") || !strings.Contains(text, fmt.Sprintf("%dd", st.Certificate.DaysLeft)) {
		t.Errorf("text status does not show certificate days:\n%s", text)
	}
	sub := mustTed(t, "subscriber", "status", "--config", web.config).stdout
	if !strings.Contains(sub, "certificate 7") {
		t.Errorf("subscriber status does not show its certificate's days left:\n%s", sub)
	}
	for _, n := range []*node{dist, web} {
		if exp := n.metric("ted_certificate_expiry_timestamp_seconds"); time.Until(time.Unix(int64(exp), 0)) < 700*24*time.Hour {
			t.Errorf("%s: certificate expiry metric %v", n.name, exp)
		}
	}
}

// TestMembershipRevocation: a revocation closes live sessions within
// seconds, on the top tier from its tls.crl and on the lower tier from
// the list its parent passes down, and new sessions of the revoked are
// refused; both ends log why.
func TestMembershipRevocation(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	first := nw.revoke() // an empty list: tls.crl must exist at start
	dist1, dist2 := twoTiers(nw, []string{"web-1", "web-3"}, []string{"web-2"})
	dist1.stop()
	dist1.values["tls"].(map[string]string)["crl"] = "pki/revoked.crl"
	dist1.rewriteConfig()
	dist1.start()
	dist1.waitLog("revocation list in force", "number="+first)
	web1 := nw.subscriber("web-1", subscriberSpec{parents: []string{dist1.addr}})
	web3 := nw.subscriber("web-3", subscriberSpec{parents: []string{dist1.addr}})
	web2 := nw.subscriber("web-2", subscriberSpec{parents: []string{dist2.addr}})
	nw.build("1.0.0")
	nw.publish("app", dist1)
	for _, w := range []*node{web1, web2, web3} {
		w.waitState(1, "extracted")
	}
	dist2.waitLog("newer revocation list from the parent", "number="+first)

	start := time.Now()
	number := nw.revoke("web-1", "web-2")
	for _, c := range []struct {
		parent, child *node
	}{{dist1, web1}, {dist2, web2}} {
		reason := fmt.Sprintf("certificate %s (serial %s) is revoked by the CA (revocation list %s)", c.child.name, nw.serial(c.child.name), number)
		waitForWithin(t, 20*time.Second, c.child.name+"'s session closed", func() (bool, string) {
			return c.child.logLine("parent session ended", reason) != "", "not yet"
		})
		t.Logf("%s's session closed %v after the revocation", c.child.name, time.Since(start).Round(100*time.Millisecond))
		c.parent.waitLog("session closed: the peer's certificate is revoked", "peer="+c.child.name, reason)
		// It dials again and is refused, told why.
		c.child.waitLog("parent unreachable", "refused: "+reason)
		c.parent.waitLog("refused peer", reason)
	}
	dist2.waitLog("newer revocation list from the parent", "number="+number)
	cas, err := pki.LoadCACertificates(filepath.Join(nw.pki, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if kept, err := pki.LoadRevocations(filepath.Join(dist2.dataDir, "revoked.crl"), cas); err != nil || kept.Number.String() != number {
		t.Errorf("dist-2 kept %+v, %v; want list %s", kept, err, number)
	}
	if n := dist1.metric("ted_distributor_revoked_sessions_closed_total"); n != 1 {
		t.Errorf("dist-1 closed %v revoked sessions, want 1", n)
	}
	// web-3 is not revoked: still served.
	nw.build("2.0.0")
	nw.publish("app", dist1)
	web3.waitState(2, "extracted")
	if web3.logLine("parent session ended") != "" {
		t.Errorf("web-3's session ended: %s", web3.logLine("parent session ended"))
	}

	// A restart of dist-2 keeps the list it was passed.
	dist2.stop()
	dist1.stop()
	dist2.start()
	dist2.waitLog("revocation list in force", "number="+number)
}

// TestMembershipLiveEdit: an edit of the distributor's config admits a new
// child and removes another without a restart, through the file watcher
// and through SIGHUP; a bad edit keeps the running config.
func TestMembershipLiveEdit(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-1"}},
	}})
	web1 := nw.subscriber("web-1", subscriberSpec{parents: []string{dist.addr}})
	web2 := nw.subscriber("web-2", subscriberSpec{parents: []string{dist.addr}})
	nw.build("1.0.0")
	nw.publish("app", dist)
	web1.waitState(1, "extracted")
	web2.waitLog("parent unreachable", "web-2 is not a child of any channel of dist-1")

	// The file changes: web-2 in, web-1 out.
	dist.setChildren("web", "web-2")
	dist.rewriteConfig()
	dist.waitLog("config reloaded", "why=\"config file changed\"", "channels.web.children: [web-2]")
	removed := "web-1 is not a child of channel web on dist-1: children are [web-2] (config of dist-1 reloaded)"
	dist.waitLog("session closed: no longer allowed by the reloaded config", "peer=web-1")
	web1.waitLog("parent session ended", removed)
	web2.waitState(1, "extracted")

	// A bad edit: the running config stays, and says why.
	dist.setChildren("web", "web-2", "group:")
	dist.rewriteConfig()
	dist.waitLog("config not reloaded; the running config stays", "channels.web.children[1]")
	if st, err := dist.distributorStatus(); err != nil {
		t.Fatal(err)
	} else if c, ok := st.child("web-2"); !ok || !c.Connected {
		t.Errorf("web-2 after a bad edit: %+v", c)
	}
	if line := web2.logLine("parent session ended"); line != "" {
		t.Errorf("web-2's session ended after a bad edit: %s", line)
	}

	// SIGHUP: web-1 back, by a pattern; a key that takes a restart is
	// named, and keeps its value.
	dist.setChildren("web", "web-2", "web-1*")
	dist.values["keep_revisions"] = 5
	dist.rewriteConfig()
	dist.hup()
	dist.waitLog("config reloaded", "why=SIGHUP")
	dist.waitLog("config keys changed that take a restart", "keep_revisions")
	nw.build("2.0.0")
	nw.publish("app", dist)
	web1.waitState(2, "extracted")
	web2.waitState(2, "extracted")
	if line := web2.logLine("parent session ended"); line != "" {
		t.Errorf("web-2's session ended on a reload that keeps it: %s", line)
	}
}

// TestMembershipSubscriberReload: a subscriber takes an edit of its
// channels without a restart, saying them in a new hello; a bad edit keeps
// the running config.
func TestMembershipSubscriberReload(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-*"}},
	}})
	web := nw.subscriber("web-1", subscriberSpec{parents: []string{dist.addr}})
	nw.build("1.0.0")
	nw.publish("app", dist)
	web.waitState(1, "extracted")

	// A channel the parent does not carry: the new hello is refused,
	// whole, naming it.
	web.values["channels"] = []string{"web", "mail"}
	web.rewriteConfig()
	web.waitLog("config reloaded", "channels: [web mail]")
	web.waitLog("channel mail is not carried by dist-1 (asked by web-1)")

	// A bad edit changes nothing; SIGHUP puts the good one back.
	web.values["channels"] = []string{}
	web.rewriteConfig()
	web.waitLog("config not reloaded; the running config stays", "channels")
	web.values["channels"] = []string{"web"}
	web.rewriteConfig()
	web.hup()
	web.waitLog("config reloaded", "why=SIGHUP")
	dist.waitDistributor("web-1 connected again", func(st distributorStatus) bool {
		c, ok := st.child("web-1")
		return ok && c.Connected
	})
	nw.build("2.0.0")
	nw.publish("app", dist)
	web.waitState(2, "extracted")
}
