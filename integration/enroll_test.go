//go:build linux

package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ted/pki"
)

// Enrollment and renewal with real processes (docs/enroll.md): a
// distributor holding the CA signs, one without passes requests on to its
// parent, and ted enroll on a new server gets a certificate its
// subscriber then runs with.

// signingDistributor starts a distributor like nw.distributor, with
// enroll.ca_dir set to the network's CA.
func signingDistributor(nw *network, name string, children []string) *node {
	nw.t.Helper()
	nw.issue(name, "distributor")
	values := map[string]any{
		"name":     name,
		"data_dir": "./var/" + name,
		"tls":      map[string]string{"ca": "pki/ca.crt", "cert": "pki/" + name + ".crt", "key": "pki/" + name + ".key"},
		"trust":    nw.relTrust(nil),
		"channels": map[string]any{"web": map[string]any{"publishers": []string{"pub-1"}, "children": children}},
		"enroll":   map[string]string{"ca_dir": "pki"},
	}
	n := nw.newNode(name, "distributor", values)
	n.startFresh()
	return n
}

// tokenResult is `ted pki token --json`.
type tokenResult struct {
	Token         string    `json:"token"`
	ID            string    `json:"id"`
	Expires       time.Time `json:"expires"`
	CAFingerprint string    `json:"ca_fingerprint"`
}

// joinToken makes a join token with ted pki token on the network's CA.
func joinToken(t *testing.T, nw *network, role string, extra ...string) tokenResult {
	t.Helper()
	var res tokenResult
	tedJSON(t, &res, append([]string{"pki", "token", "--dir", nw.pki, "--role", role}, extra...)...)
	if res.Token == "" || res.ID == "" {
		t.Fatalf("ted pki token: %+v", res)
	}
	return res
}

// caFingerprint is what ted pki fingerprint prints for the network's CA.
func caFingerprint(t *testing.T, nw *network) string {
	t.Helper()
	var res struct {
		Fingerprint string `json:"ca_fingerprint"`
	}
	tedJSON(t, &res, "pki", "fingerprint", "--dir", nw.pki)
	if !strings.HasPrefix(res.Fingerprint, "sha256:") {
		t.Fatalf("ted pki fingerprint: %+v", res)
	}
	return res.Fingerprint
}

// enrollResult is `ted enroll --json`.
type enrollResult struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Serial  string    `json:"serial"`
	Expires time.Time `json:"expires"`
	CACert  string    `json:"ca_cert"`
	Cert    string    `json:"cert"`
	Key     string    `json:"key"`
}

func TestEnrollSubscriberThenReceives(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := signingDistributor(nw, "dist-1", []string{"dist-2", "web-1"})
	dist2 := nw.distributor("dist-2", distributorSpec{parents: []string{dist1.addr}, channels: map[string]channel{
		"web": {children: []string{"web-2"}},
	}})
	fp := caFingerprint(t, nw)
	out := filepath.Join(nw.dir, "enrolled")
	tr := joinToken(t, nw, "subscriber", "--group", "web")
	token, tok := tr.Token, tr
	if tr.CAFingerprint != fp {
		t.Fatalf("ted pki token's fingerprint %s, ted pki fingerprint's %s", tr.CAFingerprint, fp)
	}

	// A token file keeps the token out of the process list.
	tokenFile := filepath.Join(nw.dir, "token")
	writeFile(t, tokenFile, []byte(token+"\n"), 0o600)
	r := mustTed(t, "enroll", "--token-file", tokenFile, "--ca-fingerprint", fp, "--to", dist1.addr, "--out", out, "--name", "web-1")
	for _, want := range []string{"enrolled web-1 (subscriber, groups web) through " + dist1.addr + " (dist-1)", "cert: " + filepath.Join(out, "web-1.crt")} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("ted enroll printed no %q:\n%s", want, r.stdout)
		}
	}
	if fi, err := os.Stat(filepath.Join(out, "web-1.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key: %v %v", fi, err)
	}
	line := dist1.waitLog("enrolled web-1 (subscriber, groups web) with token " + tok.ID + " from 127.0.0.1:")
	if strings.Contains(dist1.log(), token) {
		t.Fatalf("the token itself is in the signer's log: %s", line)
	}

	// Used twice: refused by the signer, and nothing written.
	r = ted(t, "enroll", "--token", token, "--ca-fingerprint", fp, "--to", dist1.addr, "--out", filepath.Join(nw.dir, "again"), "--name", "web-9")
	if r.code != 1 || !strings.Contains(r.stderr, "join token "+tok.ID+" was already used") || !strings.Contains(r.stderr, "by web-1") {
		t.Fatalf("second use: %s", r)
	}
	if _, err := os.Stat(filepath.Join(nw.dir, "again", "web-9.key")); !os.IsNotExist(err) {
		t.Fatalf("a refused enrollment left its key: %v", err)
	}

	// The wrong fingerprint: nothing is sent.
	wrong := "sha256:" + strings.Repeat("ab", 32)
	token2 := joinToken(t, nw, "subscriber", "--name", "web-2").Token
	r = ted(t, "enroll", "--token", token2, "--ca-fingerprint", wrong, "--to", dist1.addr, "--out", out)
	if r.code != 1 || !strings.Contains(r.stderr, "CA fingerprint mismatch") {
		t.Fatalf("wrong fingerprint: %s", r)
	}

	// Through dist-2, which does not sign: it passes the request on. The
	// name is the token's.
	var res enrollResult
	tedJSON(t, &res, "enroll", "--token", token2, "--ca-fingerprint", fp, "--to", dist2.addr, "--out", out)
	if res.Name != "web-2" || res.Role != "subscriber" || res.Cert != filepath.Join(out, "web-2.crt") {
		t.Fatalf("enrolled through dist-2: %+v", res)
	}
	dist2.waitLog("enrollment request passed on", "parent="+dist1.addr)
	dist1.waitLog("enrolled web-2 (subscriber, groups none)")

	// The enrolled subscribers run and receive.
	tlsOf := func(name string) *tlsSpec {
		return &tlsSpec{ca: "enrolled/ca.crt", cert: "enrolled/" + name + ".crt", key: "enrolled/" + name + ".key"}
	}
	web1 := nw.subscriber("web-1", subscriberSpec{parents: []string{dist1.addr}, tls: tlsOf("web-1")})
	web2 := nw.subscriber("web-2", subscriberSpec{parents: []string{dist2.addr}, tls: tlsOf("web-2")})
	nw.build("1.0.0")
	nw.publish("app", dist1)
	for _, web := range []*node{web1, web2} {
		web.waitState(1, "extracted")
		requireTree(t, web.target, nw.src)
	}
}

func TestEnrollExpiredToken(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := signingDistributor(nw, "dist-1", []string{"web-1"})
	tok := joinToken(t, nw, "subscriber", "--ttl", "1s")
	token := tok.Token
	waitFor(t, "the token to expire", func() (bool, string) {
		return time.Now().After(tok.Expires), "expires " + tok.Expires.String()
	})
	r := ted(t, "enroll", "--token", token, "--ca-fingerprint", caFingerprint(t, nw), "--to", dist1.addr,
		"--out", filepath.Join(nw.dir, "enrolled"), "--name", "web-1")
	if r.code != 1 || !strings.Contains(r.stderr, "join token "+tok.ID+" expired at") || !strings.Contains(r.stderr, "make a new one with ted pki token") {
		t.Fatalf("expired token: %s", r)
	}
	if _, err := os.Stat(filepath.Join(nw.dir, "enrolled", "web-1.key")); !os.IsNotExist(err) {
		t.Fatalf("a refused enrollment left its key: %v", err)
	}
}

// TestRenewAtStart: a subscriber whose certificate is due at start renews
// it through a distributor that passes the request on, writes it over its
// files and keeps working. Valid 4 minutes (9 with the 5 minutes by which
// its start is backdated), with renew_before 3 h cut to half the lifetime,
// it is due from the moment it is issued.
func TestRenewAtStart(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := signingDistributor(nw, "dist-1", []string{"dist-2"})
	dist2 := nw.distributor("dist-2", distributorSpec{parents: []string{dist1.addr}, channels: map[string]channel{
		"web": {children: []string{"web-r"}},
	}})
	files, err := pki.IssueSpec(nw.pki, pki.Spec{Name: "web-r", Role: pki.RoleSubscriber, Groups: []string{"web"}, Validity: 4 * time.Minute}, false)
	if err != nil {
		t.Fatal(err)
	}
	old, err := pki.LoadCertificate(files.Cert)
	if err != nil {
		t.Fatal(err)
	}
	web := nw.newNode("web-r", "subscriber", map[string]any{
		"name":     "web-r",
		"parents":  []string{dist2.addr},
		"data_dir": "./var/web-r",
		"tls":      map[string]string{"ca": "pki/ca.crt", "cert": "pki/web-r.crt", "key": "pki/web-r.key", "renew_before": "3h"},
		"channels": []string{"web"},
		"trust":    nw.relTrust(nil),
		"root":     "./srv/web-r",
	})
	web.root = filepath.Join(nw.dir, "srv", "web-r")
	web.target = filepath.Join(web.root, "app")
	web.startFresh()

	web.waitLog("tls.renew_before is more than half the certificate's lifetime", "renews_before_expiry=4m30s")
	web.waitLog("certificate renewed", "old_serial="+pki.SerialHex(old))
	renewed, err := pki.LoadCertificate(files.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if pki.SerialHex(renewed) == pki.SerialHex(old) || renewed.NotAfter.Before(old.NotAfter) {
		t.Fatalf("on disk: serial %s expires %s, was %s expiring %s", pki.SerialHex(renewed), renewed.NotAfter, pki.SerialHex(old), old.NotAfter)
	}
	// The same lifetime, to the second (both ends are whole seconds).
	if life, was := renewed.NotAfter.Sub(renewed.NotBefore), old.NotAfter.Sub(old.NotBefore); life < was-time.Second || life > was+time.Second {
		t.Fatalf("renewed for %v, was %v", life, was)
	}
	if groups, _ := pki.GroupsOf(renewed); len(groups) != 1 || groups[0] != "web" {
		t.Fatalf("groups %v", groups)
	}
	if fi, err := os.Stat(files.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key: %v %v", fi, err)
	}
	dist1.waitLog("renewed web-r (subscriber)")

	// The session keeps working.
	nw.build("1.0.0")
	nw.publish("app", dist1)
	web.waitState(1, "extracted")

	// A renewal by hand, while the daemon runs.
	var res struct {
		Name      string `json:"name"`
		OldSerial string `json:"old_serial"`
		Serial    string `json:"serial"`
	}
	r := mustTed(t, "enroll", "--renew", "--config", web.config, "--json")
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	again, err := pki.LoadCertificate(files.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if res.Name != "web-r" || res.OldSerial != pki.SerialHex(renewed) || res.Serial != pki.SerialHex(again) {
		t.Fatalf("ted enroll --renew: %+v, on disk %s", res, pki.SerialHex(again))
	}
	// Restarted, the daemon runs with the certificate renewed by hand.
	web.stop()
	web.start()
	nw.build("1.0.1")
	nw.publish("app", dist1)
	web.waitState(2, "extracted")
}
