package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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

	out.Reset()
	opts := pkiIssueOptions{dir: dir, name: "relay", role: "distributor", hosts: []string{"relay.example.com", "10.1.2.3"}}
	if err := runPKIIssue(ctx, g, opts, &out); err != nil {
		t.Fatalf("issue: %v", err)
	}
	var issueRes struct {
		Name, Role, Cert, Key string
		Hosts                 []string
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
			[]string{"wrote " + filepath.Join(dir, "ca.crt"), "wrote " + filepath.Join(dir, "ca.key")}},
		{"issue", func(b *bytes.Buffer) error {
			return runPKIIssue(ctx, g, pkiIssueOptions{dir: dir, name: "web1", role: "subscriber"}, b)
		}, []string{"wrote " + filepath.Join(dir, "web1.crt"), "wrote " + filepath.Join(dir, "web1.key")}},
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
