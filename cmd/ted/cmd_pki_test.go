package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"ted/distribution"
	"ted/pki"
)

func TestPKICommandsJSON(t *testing.T) {
	ctx := context.Background()
	g := &globalOptions{json: true}
	dir := filepath.Join(t.TempDir(), "pki")

	var out bytes.Buffer
	if err := runPKIInit(ctx, g, pkiInitOptions{dir: dir}, &out); err != nil {
		t.Fatalf("init: %v", err)
	}
	var initRes map[string]string
	decodeOne(t, out.Bytes(), &initRes)
	if initRes["ca_cert"] != filepath.Join(dir, "ca.crt") || initRes["ca_key"] != filepath.Join(dir, "ca.key") {
		t.Errorf("init JSON = %v", initRes)
	}
	if caCert, err := pki.LoadCertificate(initRes["ca_cert"]); err != nil || initRes["ca_fingerprint"] != pki.Fingerprint(caCert) {
		t.Errorf("init JSON fingerprint %q: %v", initRes["ca_fingerprint"], err)
	}

	out.Reset()
	opts := pkiIssueOptions{dir: dir, name: "relay", role: "distributor", hosts: []string{"relay.example.com", "10.1.2.3"}}
	if err := runPKIIssue(ctx, g, opts, &out); err != nil {
		t.Fatalf("issue: %v", err)
	}
	var issueRes struct {
		Name, Role, Cert, Key, Serial string
		Hosts                         []string
		Expires                       time.Time
	}
	decodeOne(t, out.Bytes(), &issueRes)
	if issueRes.Name != "relay" || issueRes.Role != "distributor" ||
		issueRes.Cert != filepath.Join(dir, "relay.crt") || issueRes.Key != filepath.Join(dir, "relay.key") ||
		!slices.Equal(issueRes.Hosts, opts.hosts) {
		t.Errorf("issue JSON = %+v", issueRes)
	}
	cert, err := pki.LoadCertificate(issueRes.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if issueRes.Serial != pki.SerialHex(cert) || !issueRes.Expires.Equal(cert.NotAfter) {
		t.Errorf("issue JSON serial %s, expires %v; certificate %s, %v", issueRes.Serial, issueRes.Expires, pki.SerialHex(cert), cert.NotAfter)
	}
	if role, err := pki.RoleOf(cert); err != nil || role != pki.RoleDistributor {
		t.Errorf("issued role = %q, %v", role, err)
	}

	out.Reset()
	keyFile := filepath.Join(dir, "publisher.key")
	if err := runPKISigningKey(ctx, g, pkiSigningKeyOptions{out: keyFile}, &out); err != nil {
		t.Fatalf("signing-key: %v", err)
	}
	var keyRes map[string]string
	decodeOne(t, out.Bytes(), &keyRes)
	pub, err := pki.LoadPublicKey(keyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if keyRes["key"] != keyFile || keyRes["public_key"] != keyFile+".pub" || keyRes["key_id"] != distribution.KeyID(pub) {
		t.Errorf("signing-key JSON = %v", keyRes)
	}
}

func decodeOne(t *testing.T, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	if dec.More() {
		t.Fatalf("more than one JSON document in %q", b)
	}
}

func TestPKICommandsText(t *testing.T) {
	ctx := context.Background()
	g := &globalOptions{}
	dir := t.TempDir()
	tests := []struct {
		name string
		run  func(*bytes.Buffer) error
		want []string
	}{
		{"init", func(b *bytes.Buffer) error { return runPKIInit(ctx, g, pkiInitOptions{dir: dir}, b) },
			[]string{"wrote " + filepath.Join(dir, "ca.crt"), "wrote " + filepath.Join(dir, "ca.key"), "CA fingerprint sha256:"}},
		{"issue", func(b *bytes.Buffer) error {
			return runPKIIssue(ctx, g, pkiIssueOptions{dir: dir, name: "web1", role: "subscriber"}, b)
		}, []string{"wrote " + filepath.Join(dir, "web1.crt"), "wrote " + filepath.Join(dir, "web1.key"), "serial "}},
		{"signing-key", func(b *bytes.Buffer) error {
			return runPKISigningKey(ctx, g, pkiSigningKeyOptions{out: filepath.Join(dir, "s.key")}, b)
		}, []string{"wrote " + filepath.Join(dir, "s.key"), "wrote " + filepath.Join(dir, "s.key.pub") + " (key id "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := tt.run(&out); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("output %q: want %d lines", out.String(), len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
				}
			}
		})
	}
}

func TestPKIUsageErrors(t *testing.T) {
	ctx := context.Background()
	g := &globalOptions{}
	dir := t.TempDir()
	tests := []struct {
		name string
		run  func() error
		want string
	}{
		{"init without dir", func() error { return runPKIInit(ctx, g, pkiInitOptions{}, &bytes.Buffer{}) }, "--dir"},
		{"issue without dir", func() error {
			return runPKIIssue(ctx, g, pkiIssueOptions{name: "n", role: "publisher"}, &bytes.Buffer{})
		}, "--dir"},
		{"issue without name", func() error {
			return runPKIIssue(ctx, g, pkiIssueOptions{dir: dir, role: "publisher"}, &bytes.Buffer{})
		}, "--name"},
		{"issue without role", func() error {
			return runPKIIssue(ctx, g, pkiIssueOptions{dir: dir, name: "n"}, &bytes.Buffer{})
		}, "--role"},
		{"issue bad role", func() error {
			return runPKIIssue(ctx, g, pkiIssueOptions{dir: dir, name: "n", role: "admin"}, &bytes.Buffer{})
		}, "publisher, distributor, subscriber"},
		{"issue bad name", func() error {
			return runPKIIssue(ctx, g, pkiIssueOptions{dir: dir, name: "../n", role: "publisher"}, &bytes.Buffer{})
		}, "--name"},
		{"issue empty host", func() error {
			return runPKIIssue(ctx, g, pkiIssueOptions{dir: dir, name: "n", role: "publisher", hosts: []string{""}}, &bytes.Buffer{})
		}, "--host"},
		{"signing-key without out", func() error {
			return runPKISigningKey(ctx, g, pkiSigningKeyOptions{}, &bytes.Buffer{})
		}, "--out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			var usage usageError
			if !errors.As(err, &usage) || exitCode(err) != exitUsage {
				t.Fatalf("err = %v, want a usage error (exit 2)", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("usage errors wrote %d files", len(entries))
	}
}

func TestPKIRefusesOverwrite(t *testing.T) {
	ctx := context.Background()
	g := &globalOptions{}
	keyFile := filepath.Join(t.TempDir(), "s.key")
	if err := runPKISigningKey(ctx, g, pkiSigningKeyOptions{out: keyFile}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	err := runPKISigningKey(ctx, g, pkiSigningKeyOptions{out: keyFile}, &bytes.Buffer{})
	if !errors.Is(err, pki.ErrExists) || !strings.Contains(err.Error(), "--force") || exitCode(err) != exitError {
		t.Fatalf("second signing-key: %v, want ErrExists with a --force hint (exit 1)", err)
	}
	if err := runPKISigningKey(ctx, g, pkiSigningKeyOptions{out: keyFile, force: true}, &bytes.Buffer{}); err != nil {
		t.Fatalf("signing-key --force: %v", err)
	}
}

// TestPKICommandFlags checks the command tree and flag names that the command
// reference (docs/commands) documents, through cobra's own parsing.
func TestPKICommandFlags(t *testing.T) {
	dir := t.TempDir()
	g := &globalOptions{}
	cmd := newPKICommand(g)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"init", "--dir", dir, "--json"})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("pki init: %v", err)
	}
	cmd = newPKICommand(g)
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"issue", "--dir", dir, "--name", "n1", "--role", "subscriber", "--host", "a.example", "--host", "10.0.0.9", "--force"})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("pki issue: %v", err)
	}
	cert, err := pki.LoadCertificate(filepath.Join(dir, "n1.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cert.DNSNames, []string{"a.example"}) || len(cert.IPAddresses) != 1 {
		t.Errorf("hosts: DNS %q, IPs %v", cert.DNSNames, cert.IPAddresses)
	}
	cmd = newPKICommand(g)
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"signing-key", "--out", filepath.Join(dir, "s.key"), "--force"})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("pki signing-key: %v", err)
	}
}

// runPKI runs ted pki with args through the root command, as ted does,
// and returns its stdout and stderr.
func runPKI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := newRootCommand()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs(append([]string{"pki"}, args...))
	err := cmd.ExecuteContext(context.Background())
	return stdout.String(), stderr.String(), err
}

func newTestCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := pki.InitCA(dir, false); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPKIIssueGroupsAndValidity(t *testing.T) {
	dir := newTestCA(t)
	if _, _, err := runPKI(t, "issue", "--dir", dir, "--name", "web-1", "--role", "subscriber", "--group", "web", "--group", "eu-west", "--valid", "90d"); err != nil {
		t.Fatal(err)
	}
	cert, err := pki.LoadCertificate(filepath.Join(dir, "web-1.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if groups, err := pki.GroupsOf(cert); err != nil || !slices.Equal(groups, []string{"web", "eu-west"}) {
		t.Errorf("groups = %v, %v", groups, err)
	}
	if d := time.Until(cert.NotAfter); d < 89*24*time.Hour || d > 90*24*time.Hour {
		t.Errorf("valid for %v, want 90 days", d)
	}
	// The default is two years.
	if _, _, err := runPKI(t, "issue", "--dir", dir, "--name", "relay", "--role", "distributor", "--valid", "36h"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runPKI(t, "issue", "--dir", dir, "--name", "relay2", "--role", "distributor"); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]time.Duration{"relay": 36 * time.Hour, "relay2": 730 * 24 * time.Hour} {
		cert, err := pki.LoadCertificate(filepath.Join(dir, name+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Until(cert.NotAfter); d < want-time.Hour || d > want {
			t.Errorf("%s valid for %v, want %v", name, d, want)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--group", "a b"}, `--group: invalid group "a b"`},
		{[]string{"--group", "web", "--group", "web"}, `group "web" is given twice`},
		{[]string{"--valid", "3y"}, `invalid duration "3y"`},
		{[]string{"--valid", "0s"}, `duration "0s": must be positive`},
		{[]string{"--valid", "-5d"}, `duration "-5d": must be positive`},
	} {
		args := append([]string{"issue", "--dir", dir, "--name", "n", "--role", "subscriber"}, tc.args...)
		_, _, err := runPKI(t, args...)
		if exitCode(err) != exitUsage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
}

func TestDaysFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "1d": 24 * time.Hour, "12h": 12 * time.Hour, "1h30m": 90 * time.Minute} {
		var d time.Duration
		if err := (*daysFlag)(&d).Set(in); err != nil || d != want {
			t.Errorf("Set(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
	for _, in := range []string{"", "d", "1.5d", "3y", "90 d", "999999d", "0d", "0s", "-1d", "-1h"} {
		var d time.Duration
		if err := (*daysFlag)(&d).Set(in); err == nil {
			t.Errorf("Set(%q) accepted: %v", in, d)
		}
	}
	d := 730 * 24 * time.Hour
	if s := (*daysFlag)(&d).String(); s != "730d" {
		t.Errorf("String = %q", s)
	}
	d = 36 * time.Hour
	if s := (*daysFlag)(&d).String(); s != "36h0m0s" {
		t.Errorf("String = %q", s)
	}
}

func TestPKIToken(t *testing.T) {
	dir := newTestCA(t)
	caCert, err := pki.LoadCertificate(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := runPKI(t, "token", "--dir", dir, "--role", "subscriber", "--group", "web", "--name", "web-9", "--ttl", "2h")
	if err != nil {
		t.Fatal(err)
	}
	// The token alone on stdout, for T=$(ted pki token ...).
	token := strings.TrimSuffix(stdout, "\n")
	if strings.Contains(token, "\n") || !strings.HasPrefix(token, "tedjoin1.") {
		t.Fatalf("stdout %q: want the token alone", stdout)
	}
	tok, err := pki.VerifyToken(token, []*x509.Certificate{caCert}, time.Now())
	if err != nil {
		t.Fatalf("VerifyToken: %v", err)
	}
	if tok.Role != pki.RoleSubscriber || !slices.Equal(tok.Groups, []string{"web"}) || tok.Name != "web-9" {
		t.Errorf("token says %+v", tok)
	}
	if d := time.Until(tok.Expires); d < 2*time.Hour-time.Minute || d > 2*time.Hour+time.Second {
		t.Errorf("token expires in %v, want 2h", d)
	}
	for _, want := range []string{"join token " + tok.ID, "expires at " + tok.Expires.Format(time.RFC3339), "--ca-fingerprint", pki.Fingerprint(caCert)} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q does not say %q", stderr, want)
		}
	}
	if strings.Contains(stderr, token) {
		t.Error("stderr repeats the token")
	}

	var out bytes.Buffer
	if err := runPKIToken(context.Background(), &globalOptions{json: true}, pkiTokenOptions{dir: dir, role: "distributor", ttl: pki.DefaultTokenTTL}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	var res struct {
		Token, ID, Role, Name string
		Groups                []string
		Expires               time.Time
		CAFingerprint         string `json:"ca_fingerprint"`
	}
	decodeOne(t, out.Bytes(), &res)
	got, err := pki.VerifyToken(res.Token, []*x509.Certificate{caCert}, time.Now())
	if err != nil || got.ID != res.ID || res.Role != "distributor" || res.Name != "" || res.Groups != nil ||
		!got.Expires.Equal(res.Expires) || res.CAFingerprint != pki.Fingerprint(caCert) {
		t.Errorf("token JSON %+v; verified %+v, %v", res, got, err)
	}
	if d := time.Until(res.Expires); d < 23*time.Hour || d > 24*time.Hour+time.Second {
		t.Errorf("default token expires in %v, want 24h", d)
	}
	log, err := os.ReadFile(filepath.Join(dir, "tokens.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), tok.ID) || !strings.Contains(string(log), res.ID) || strings.Contains(string(log), "tedjoin1") {
		t.Errorf("tokens.jsonl = %s", log)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--role", "subscriber"}, "--dir is required"},
		{[]string{"--dir", dir}, "--role is required"},
		{[]string{"--dir", dir, "--role", "admin"}, `--role: unknown role "admin"`},
		{[]string{"--dir", dir, "--role", "subscriber", "--ttl", "31d"}, "--ttl 31d: at most 30d"},
		{[]string{"--dir", dir, "--role", "subscriber", "--ttl", "-1h"}, `duration "-1h": must be positive`},
		{[]string{"--dir", dir, "--role", "subscriber", "--name", "a/b"}, `--name: invalid node name "a/b"`},
		{[]string{"--dir", dir, "--role", "subscriber", "--group", ""}, `--group: invalid group ""`},
	} {
		stdout, _, err := runPKI(t, append([]string{"token"}, tc.args...)...)
		if exitCode(err) != exitUsage || !strings.Contains(err.Error(), tc.want) || stdout != "" {
			t.Errorf("token %v: %v (stdout %q), want a usage error with %q", tc.args, err, stdout, tc.want)
		}
	}
	if _, _, err := runPKI(t, "token", "--dir", filepath.Join(t.TempDir(), "none"), "--role", "subscriber"); err == nil || !strings.Contains(err.Error(), "load CA") {
		t.Errorf("token without a CA: %v", err)
	}
}

func TestPKIRevokeAndList(t *testing.T) {
	dir := newTestCA(t)
	for _, args := range [][]string{
		{"--name", "web-1", "--role", "subscriber", "--group", "web"},
		{"--name", "web-2", "--role", "subscriber"},
		{"--name", "web-2", "--role", "subscriber", "--force"}, // reissued: two certificates
		{"--name", "relay", "--role", "distributor", "--valid", "12h"},
	} {
		if _, _, err := runPKI(t, append([]string{"issue", "--dir", dir}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	issued, err := pki.ReadIssued(dir)
	if err != nil || len(issued) != 4 {
		t.Fatalf("index: %v, %v", issued, err)
	}
	serialOf := func(i int) string { return issued[i].Serial }

	// By name: both of web-2's certificates; by serial, in upper case.
	stdout, _, err := runPKI(t, "revoke", "--dir", dir, "web-2", strings.ToUpper(serialOf(0)))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"revoked web-2 (serial " + serialOf(1) + ")",
		"revoked web-2 (serial " + serialOf(2) + ")",
		"revoked web-1 (serial " + serialOf(0) + ")",
		"wrote " + filepath.Join(dir, "revoked.crl") + ": revocation list number ",
		", 3 certificates revoked in all",
		"tls.crl",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("revoke output does not say %q:\n%s", want, stdout)
		}
	}
	// The number follows the clock (pki.Revoke): at least the time of the
	// revocation in seconds.
	var firstNumber int64
	if _, err := fmt.Sscanf(stdout[strings.Index(stdout, "revocation list number "):], "revocation list number %d,", &firstNumber); err != nil || firstNumber < time.Now().Add(-time.Minute).Unix() {
		t.Errorf("first list number %d (%v), want the time in seconds", firstNumber, err)
	}

	// Again, with one new: the list grows, the old one is noted.
	var out bytes.Buffer
	unknown := "abc123" + strings.Repeat("0", 26) // a serial the index does not know
	if err := runPKIRevoke(context.Background(), &globalOptions{json: true}, pkiRevokeOptions{dir: dir}, []string{"web-1", unknown}, &out); err != nil {
		t.Fatal(err)
	}
	var res struct {
		Revoked []struct {
			Name, Serial string
			Already      bool
		}
		CRL, Number string
		Count       int
	}
	decodeOne(t, out.Bytes(), &res)
	if n, err := strconv.ParseInt(res.Number, 10, 64); err != nil || n <= firstNumber || res.Count != 4 || res.CRL != filepath.Join(dir, "revoked.crl") || len(res.Revoked) != 2 ||
		res.Revoked[0].Name != "web-1" || !res.Revoked[0].Already || res.Revoked[1].Serial != unknown || res.Revoked[1].Already || res.Revoked[1].Name != "" {
		t.Errorf("revoke JSON = %+v", res)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--dir", dir}, "name a node or a certificate serial"},
		{[]string{"web-1"}, "--dir is required"},
		{[]string{"--dir", dir, "web-1", "nosuch"}, `"nosuch" is neither a node name recorded in ` + filepath.Join(dir, "issued.jsonl")},
		// A name that is valid hexadecimal is not taken for a serial.
		{[]string{"--dir", dir, "cafe"}, "no certificate issued to cafe is recorded in " + filepath.Join(dir, "issued.jsonl") + "; give its serial (ted pki list)"},
		{[]string{"--dir", dir, "web-1", "0xb1"}, "no certificate issued to 0xb1 is recorded in"},
	} {
		if _, _, err := runPKI(t, append([]string{"revoke"}, tc.args...)...); exitCode(err) != exitUsage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("revoke %v: %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
	caCert, err := pki.LoadCertificate(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	list, err := pki.LoadRevocations(filepath.Join(dir, "revoked.crl"), []*x509.Certificate{caCert})
	if err != nil || list.Number.String() != res.Number {
		t.Fatalf("a refused revoke changed the list: %v", err)
	}

	// The list, a day later: relay expired, three revoked.
	now := time.Now().Add(24 * time.Hour)
	out.Reset()
	if err := runPKIList(context.Background(), &globalOptions{json: true}, pkiListOptions{dir: dir}, now, &out); err != nil {
		t.Fatal(err)
	}
	var listed struct {
		Certificates []struct {
			Name, Role, Serial, How string
			Groups                  []string
			Expires, Issued         time.Time
			DaysLeft                int `json:"days_left"`
			Revoked                 bool
		}
		CRLNumber string `json:"crl_number"`
	}
	decodeOne(t, out.Bytes(), &listed)
	if len(listed.Certificates) != 4 || listed.CRLNumber != res.Number {
		t.Fatalf("list JSON = %+v", listed)
	}
	web1, relay := listed.Certificates[0], listed.Certificates[3]
	if web1.Name != "web-1" || web1.Role != "subscriber" || !slices.Equal(web1.Groups, []string{"web"}) || web1.Serial != serialOf(0) ||
		!web1.Revoked || web1.How != "issue" || web1.DaysLeft < 727 || web1.DaysLeft > 729 {
		t.Errorf("web-1 listed as %+v", web1)
	}
	if relay.Name != "relay" || relay.Revoked || relay.DaysLeft != -1 || !relay.Expires.Equal(issued[3].NotAfter) {
		t.Errorf("relay listed as %+v", relay)
	}

	out.Reset()
	if err := runPKIList(context.Background(), &globalOptions{}, pkiListOptions{dir: dir}, now, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("list text:\n%s", out.String())
	}
	for i, want := range []string{"revoked", "revoked", "revoked", "expired"} {
		if f := strings.Fields(lines[i+1]); f[len(f)-1] != want || f[3] != serialOf(i) {
			t.Errorf("line %q: want serial %s, %s", lines[i+1], serialOf(i), want)
		}
	}
	if !strings.Contains(lines[1], " web ") || !strings.Contains(lines[2], " - ") {
		t.Errorf("groups column: %q, %q", lines[1], lines[2])
	}

	// A new CA without certificates or a list.
	empty := newTestCA(t)
	out.Reset()
	if err := runPKIList(context.Background(), &globalOptions{}, pkiListOptions{dir: empty}, now, &out); err != nil || !strings.Contains(out.String(), "no certificates recorded") {
		t.Errorf("empty list: %q, %v", out.String(), err)
	}
	if _, _, err := runPKI(t, "list"); exitCode(err) != exitUsage {
		t.Errorf("list without --dir: %v", err)
	}
}

func TestPKIFingerprint(t *testing.T) {
	dir := newTestCA(t)
	caCert, err := pki.LoadCertificate(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	want := pki.Fingerprint(caCert)
	for _, args := range [][]string{{"--dir", dir}, {"--ca", filepath.Join(dir, "ca.crt")}} {
		stdout, _, err := runPKI(t, append([]string{"fingerprint"}, args...)...)
		if err != nil || stdout != want+"\n" {
			t.Errorf("fingerprint %v = %q, %v; want %s", args, stdout, err, want)
		}
	}
	var out bytes.Buffer
	if err := runPKIFingerprint(context.Background(), &globalOptions{json: true}, pkiFingerprintOptions{dir: dir}, &out); err != nil {
		t.Fatal(err)
	}
	var res map[string]string
	decodeOne(t, out.Bytes(), &res)
	if res["ca_fingerprint"] != want || res["ca_cert"] != filepath.Join(dir, "ca.crt") {
		t.Errorf("fingerprint JSON = %v", res)
	}
	for _, args := range [][]string{{}, {"--dir", dir, "--ca", filepath.Join(dir, "ca.crt")}} {
		if _, _, err := runPKI(t, append([]string{"fingerprint"}, args...)...); exitCode(err) != exitUsage {
			t.Errorf("fingerprint %v: %v, want a usage error", args, err)
		}
	}
	if _, err := pki.Issue(dir, "node", pki.RoleSubscriber, nil, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runPKI(t, "fingerprint", "--ca", filepath.Join(dir, "node.crt")); err == nil || !strings.Contains(err.Error(), "not a CA certificate") {
		t.Errorf("fingerprint of a node certificate: %v", err)
	}
}
