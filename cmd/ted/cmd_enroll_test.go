package main

import (
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"ted/enroll"
	"ted/pki"
	"ted/transport"
)

// TestEnrollUsage: a command line that cannot work is refused (exit 2)
// before anything is dialled.
func TestEnrollUsage(t *testing.T) {
	fp := "sha256:" + strings.Repeat("0a", 32)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"enroll", "--ca-fingerprint", fp, "--to", "127.0.0.1:1", "--out", "x"}, "--token (or --token-file) is required"},
		{[]string{"enroll", "--token", "t", "--token-file", "f", "--ca-fingerprint", fp, "--to", "127.0.0.1:1", "--out", "x"}, "--token and --token-file: say one"},
		{[]string{"enroll", "--token", "t", "--to", "127.0.0.1:1", "--out", "x"}, "--ca-fingerprint"},
		{[]string{"enroll", "--token", "t", "--ca-fingerprint", "sha1:00", "--to", "127.0.0.1:1", "--out", "x"}, "invalid certificate fingerprint"},
		{[]string{"enroll", "--token", "t", "--ca-fingerprint", fp, "--to", "dist-1", "--out", "x"}, `--to "dist-1"`},
		{[]string{"enroll", "--token", "t", "--ca-fingerprint", fp, "--to", "127.0.0.1:1", "--out", "x", "--name", "ca"}, "reserved for the CA"},
		{[]string{"enroll", "--token", "t", "--ca-fingerprint", fp, "--to", "127.0.0.1:1", "--out", "x", "--config", "c.yaml"}, "--config goes with --renew"},
		{[]string{"enroll", "--renew"}, "--config"},
		{[]string{"enroll", "--renew", "--config", "c.yaml", "--token", "t"}, "--renew takes --config only"},
	} {
		_, err := execute(t, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) || exitCode(err) != exitUsage {
			t.Errorf("ted %s: %v (exit %d); want %q, exit 2", strings.Join(tt.args, " "), err, exitCode(err), tt.want)
		}
	}
}

// TestDistributorEnrollBlock: enroll.ca_dir is required in the block,
// resolved against the config's directory, and a CA directory not (yet)
// there is a note of ted config check.
func TestDistributorEnrollBlock(t *testing.T) {
	dir := t.TempDir()
	base := "name: dist-1\ndata_dir: var\nlisten: 127.0.0.1:7400\ntrust: [pub.key]\n" +
		"tls: {ca: ca.crt, cert: dist-1.crt, key: dist-1.key}\nchannels: {web: {publishers: [pub-1]}}\n"
	file := filepath.Join(dir, "dist.yaml")
	if err := os.WriteFile(file, []byte(base+"enroll: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadDistributorConfig(file); err == nil || !strings.Contains(err.Error(), "enroll.ca_dir: missing") {
		t.Fatalf("empty enroll block: %v", err)
	}
	if err := os.WriteFile(file, []byte(base+"enroll: {ca_dir: pki}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := loadDistributorConfig(file)
	if err != nil {
		t.Fatal(err)
	}
	if f.Enroll.CADir != filepath.Join(dir, "pki") {
		t.Fatalf("ca_dir resolved to %q", f.Enroll.CADir)
	}
	c := checkFile(file, "")
	found := false
	for _, n := range c.Notes {
		found = found || strings.HasPrefix(n, "enroll.ca_dir: "+filepath.Join(dir, "pki", "ca.key")+" does not exist")
	}
	if !found {
		t.Fatalf("no note for the CA directory: %v (problems %v)", c.Notes, c.Problems)
	}
}

// TestEnrollKeepsTheKeyOnceTheTokenIsSpent: when the files cannot be put
// in place after the certificate arrived, nothing is removed, and the
// error names the temporary files to rename.
func TestEnrollKeepsTheKeyOnceTheTokenIsSpent(t *testing.T) {
	caDir := newTestCA(t)
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	files, err := pki.IssueSpec(caDir, pki.Spec{Name: "dist-1", Role: pki.RoleDistributor}, false)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := transport.LoadCredentials(filepath.Join(caDir, "ca.crt"), files.Cert, files.Key, pki.RoleDistributor)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	h, err := enroll.New(enroll.Config{Cred: cred, CA: ca, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := transport.Listen("127.0.0.1:0", cred, nil, transport.QUICConfig{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln.HandleEnroll(h.Serve)
	token, _, err := ca.NewToken(pki.TokenSpec{Role: pki.RoleSubscriber, Name: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	// A directory that is not empty where the key goes: renaming the key
	// into place fails, after the token was spent.
	if err := os.MkdirAll(filepath.Join(out, "web-1.key", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = execute(t, "enroll", "--token", token, "--ca-fingerprint", pki.Fingerprint(ca.Cert), "--to", ln.Addr().String(),
		"--out", out, "--force")
	if err == nil || !strings.Contains(err.Error(), "the token is spent") {
		t.Fatalf("enroll with a key path that cannot be written: %v", err)
	}
	m := regexp.MustCompile(`(\S+) \(for ` + regexp.QuoteMeta(filepath.Join(out, "web-1.key")) + `\)`).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("the error does not name the staged key: %v", err)
	}
	keyPEM, rerr := os.ReadFile(m[1])
	if rerr != nil {
		t.Fatalf("staged key removed: %v", rerr)
	}
	m = regexp.MustCompile(`(\S+) \(for ` + regexp.QuoteMeta(filepath.Join(out, "web-1.crt")) + `\)`).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("the error does not name the staged certificate: %v", err)
	}
	certPEM, rerr := os.ReadFile(m[1])
	if rerr != nil {
		t.Fatalf("staged certificate removed: %v", rerr)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("the staged key and certificate do not match: %v", err)
	}
}
