package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// newCA makes a CA in a fresh directory and returns the directory.
func newCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := InitCA(dir, false); err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	return dir
}

func TestInitCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "pki")
	files, err := InitCA(dir, false)
	if err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	if files.Cert != filepath.Join(dir, "ca.crt") || files.Key != filepath.Join(dir, "ca.key") {
		t.Fatalf("InitCA files = %+v", files)
	}
	info, err := os.Stat(dir)
	if err != nil || info.Mode().Perm()&0o700 != 0o700 {
		t.Fatalf("CA directory: %v, %v", info, err)
	}
	ca, err := LoadCertificate(files.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || ca.Subject.CommonName != "TED CA" {
		t.Errorf("CA: IsCA=%v CN=%q", ca.IsCA, ca.Subject.CommonName)
	}
	if ca.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("CA key usage = %v", ca.KeyUsage)
	}
	if _, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("CA key is %T, want ECDSA", ca.PublicKey)
	}
	if years := ca.NotAfter.Sub(ca.NotBefore).Hours() / 24 / 365; years < 9.9 || years > 10.1 {
		t.Errorf("CA validity = %.2f years, want 10", years)
	}
	if ca.SerialNumber.BitLen() < 64 {
		t.Errorf("CA serial %v is not random", ca.SerialNumber)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
}

func TestIssueRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		role    Role
		hosts   []string
		wantDNS []string
		wantIPs []string
	}{
		{name: "pub-1", role: RolePublisher, wantDNS: []string{"pub-1"}},
		{name: "relay.tokyo", role: RoleDistributor, hosts: []string{"relay.example.com", "10.0.0.1", "::1"},
			wantDNS: []string{"relay.example.com"}, wantIPs: []string{"10.0.0.1", "::1"}},
		{name: "web_01", role: RoleSubscriber, hosts: []string{"127.0.0.1"}, wantIPs: []string{"127.0.0.1"}},
	}
	dir := newCA(t)
	pool, err := LoadCertPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCertificate(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(string(tt.role), func(t *testing.T) {
			files, err := Issue(dir, tt.name, tt.role, tt.hosts, false)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			if files.Cert != filepath.Join(dir, tt.name+".crt") || files.Key != filepath.Join(dir, tt.name+".key") {
				t.Fatalf("Issue files = %+v", files)
			}
			cert, err := LoadCertificate(files.Cert)
			if err != nil {
				t.Fatal(err)
			}
			role, err := RoleOf(cert)
			if err != nil || role != tt.role {
				t.Fatalf("RoleOf = %q, %v; want %q", role, err, tt.role)
			}
			if err := VerifyRole(cert, pool, tt.role); err != nil {
				t.Errorf("VerifyRole: %v", err)
			}
			if cert.Subject.CommonName != tt.name {
				t.Errorf("CN = %q, want %q", cert.Subject.CommonName, tt.name)
			}
			if !slices.Equal(cert.DNSNames, tt.wantDNS) {
				t.Errorf("DNS names = %q, want %q", cert.DNSNames, tt.wantDNS)
			}
			var ips []string
			for _, ip := range cert.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.wantIPs) {
				t.Errorf("IPs = %q, want %q", ips, tt.wantIPs)
			}
			wantHosts := tt.hosts
			if len(wantHosts) == 0 {
				wantHosts = []string{tt.name}
			}
			if !slices.Equal(files.Hosts, wantHosts) {
				t.Errorf("Hosts = %q, want %q", files.Hosts, wantHosts)
			}
			if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
				t.Errorf("ExtKeyUsage = %v", cert.ExtKeyUsage)
			}
			if cert.IsCA {
				t.Error("node certificate is a CA")
			}
			if years := cert.NotAfter.Sub(cert.NotBefore).Hours() / 24 / 365; years < 1.9 || years > 2.1 {
				t.Errorf("validity = %.2f years, want 2", years)
			}
			if err := cert.CheckSignatureFrom(ca); err != nil {
				t.Errorf("not signed by the CA: %v", err)
			}
			for _, ext := range cert.Extensions {
				if ext.Id.Equal(roleOID) && ext.Critical {
					t.Error("role extension is critical")
				}
			}
			// The transport loads the pair with crypto/tls.
			if _, err := tls.LoadX509KeyPair(files.Cert, files.Key); err != nil {
				t.Errorf("tls.LoadX509KeyPair: %v", err)
			}
			// Hosts are usable for TLS server name checks.
			for _, h := range wantHosts {
				if err := cert.VerifyHostname(h); err != nil {
					t.Errorf("VerifyHostname(%q): %v", h, err)
				}
			}
		})
	}
}

func TestIssueClampsToCAExpiry(t *testing.T) {
	dir := t.TempDir()
	caNotAfter := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)
	writeCustomCA(t, dir, caNotAfter)
	files, err := Issue(dir, "node", RoleSubscriber, nil, false)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	cert, err := LoadCertificate(files.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.NotAfter.Equal(caNotAfter) {
		t.Errorf("NotAfter = %v, want the CA's %v", cert.NotAfter, caNotAfter)
	}
}

func TestIssueRefusesExpiredCA(t *testing.T) {
	dir := t.TempDir()
	writeCustomCA(t, dir, time.Now().Add(-time.Hour))
	_, err := Issue(dir, "node", RoleSubscriber, nil, false)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Issue with an expired CA: %v", err)
	}
}

// keyAndSerial makes what a test certificate needs: a P-256 key and a
// serial number, as Issue makes them.
func keyAndSerial(t *testing.T) (*ecdsa.PrivateKey, *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := newSerial()
	if err != nil {
		t.Fatal(err)
	}
	return key, serial
}

// writeCustomCA writes dir/ca.crt and dir/ca.key for a CA that expires at
// notAfter, in the format InitCA writes.
func writeCustomCA(t *testing.T, dir string, notAfter time.Time) {
	t.Helper()
	key, serial := keyAndSerial(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "short CA"},
		NotBefore: notAfter.Add(-365 * 24 * time.Hour), NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := encodePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFileModes(t *testing.T) {
	dir := newCA(t)
	if _, err := Issue(dir, "node", RoleDistributor, nil, false); err != nil {
		t.Fatal(err)
	}
	signing := filepath.Join(dir, "sign.key")
	if _, err := GenerateSigningKey(signing, false); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T) {
		t.Helper()
		want := map[string]os.FileMode{
			"ca.key": 0o600, "node.key": 0o600, "sign.key": 0o600,
			"ca.crt": 0o644, "node.crt": 0o644, "sign.key.pub": 0o644, "issued.jsonl": 0o644,
		}
		for name, mode := range want {
			info, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if got := info.Mode().Perm(); got != mode {
				t.Errorf("%s: mode %04o, want %04o", name, got, mode)
			}
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != len(want) {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("directory holds %q, want only %d files (no temporary files left)", names, len(want))
		}
	}
	check(t)

	// Overwriting keeps the modes.
	if _, err := InitCA(dir, true); err != nil {
		t.Fatal(err)
	}
	if _, err := Issue(dir, "node", RoleDistributor, nil, true); err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateSigningKey(signing, true); err != nil {
		t.Fatal(err)
	}
	check(t)
}

func TestOverwrite(t *testing.T) {
	tests := []struct {
		name  string
		write func(dir string, force bool) error
		files []string // what write writes, relative to dir
	}{
		{"init", func(dir string, force bool) error {
			_, err := InitCA(dir, force)
			return err
		}, []string{"ca.crt", "ca.key"}},
		{"issue", func(dir string, force bool) error {
			_, err := Issue(dir, "node", RolePublisher, nil, force)
			return err
		}, []string{"node.crt", "node.key"}},
		{"signing-key", func(dir string, force bool) error {
			_, err := GenerateSigningKey(filepath.Join(dir, "sign.key"), force)
			return err
		}, []string{"sign.key", "sign.key.pub"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := newCA(t)
			if tt.name == "init" {
				dir = t.TempDir()
			}
			if err := tt.write(dir, false); err != nil {
				t.Fatalf("first write: %v", err)
			}
			before := readAll(t, dir, tt.files)

			err := tt.write(dir, false)
			if !errors.Is(err, ErrExists) {
				t.Fatalf("second write without force: %v, want ErrExists", err)
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, tt.files[0])) && !strings.Contains(err.Error(), filepath.Join(dir, tt.files[1])) {
				t.Errorf("error %q names neither file", err)
			}
			if after := readAll(t, dir, tt.files); !slices.Equal(before, after) {
				t.Error("files changed although overwrite was refused")
			}

			if err := tt.write(dir, true); err != nil {
				t.Fatalf("write with force: %v", err)
			}
			after := readAll(t, dir, tt.files)
			for i := range after {
				if after[i] == before[i] {
					t.Errorf("%s not replaced with force", tt.files[i])
				}
			}
		})
	}
}

// TestOverwriteOneOfPair checks that when only one file of a pair exists the
// other is not written either.
func TestOverwriteOneOfPair(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "sign.key")
	if err := os.WriteFile(out+".pub", []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := GenerateSigningKey(out, false)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), out+".pub") {
		t.Fatalf("GenerateSigningKey: %v, want ErrExists naming %s.pub", err, out)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("private key written although the public key file existed: %v", err)
	}
}

func readAll(t *testing.T, dir string, names []string) []string {
	t.Helper()
	var out []string
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func TestVerifyRole(t *testing.T) {
	dir := newCA(t)
	if _, err := Issue(dir, "relay", RoleDistributor, nil, false); err != nil {
		t.Fatal(err)
	}
	other := newCA(t)
	if _, err := Issue(other, "intruder", RoleDistributor, nil, false); err != nil {
		t.Fatal(err)
	}
	pool, err := LoadCertPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	relay := mustLoad(t, filepath.Join(dir, "relay.crt"))
	intruder := mustLoad(t, filepath.Join(other, "intruder.crt"))

	tests := []struct {
		name    string
		cert    *x509.Certificate
		pool    *x509.CertPool
		want    Role
		wantErr []string // substrings of the error; nil means success
		wrong   bool     // error must be ErrWrongRole
	}{
		{"right role", relay, pool, RoleDistributor, nil, false},
		{"wrong role", relay, pool, RoleSubscriber, []string{`"relay"`, "distributor", "subscriber", "cannot act as another"}, true},
		{"other CA", intruder, pool, RoleDistributor, []string{`"intruder"`, "trusted"}, false},
		{"nil pool", relay, nil, RoleDistributor, []string{`"relay"`, "pool"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyRole(tt.cert, tt.pool, tt.want)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("VerifyRole: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("VerifyRole accepted")
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if got := errors.Is(err, ErrWrongRole); got != tt.wrong {
				t.Errorf("errors.Is(err, ErrWrongRole) = %v, want %v", got, tt.wrong)
			}
		})
	}
}

func TestRoleOfRejects(t *testing.T) {
	tests := []struct {
		name    string
		ext     []pkix.Extension
		wantErr string
	}{
		{"no extension", nil, "no TED role"},
		{"unknown role", []pkix.Extension{{Id: roleOID, Value: mustRoleValue(t, "admin")}}, `unknown role "admin"`},
		{"not a string", []pkix.Extension{{Id: roleOID, Value: []byte{0x02, 0x01, 0x05}}}, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := &x509.Certificate{Subject: pkix.Name{CommonName: "x"}, Extensions: tt.ext}
			_, err := RoleOf(cert)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("RoleOf: %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func mustRoleValue(t *testing.T, s string) []byte {
	t.Helper()
	v, err := roleExtension(Role(s))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustLoad(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	cert, err := LoadCertificate(file)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestParseRole(t *testing.T) {
	tests := []struct {
		in      string
		want    Role
		wantErr bool
	}{
		{"publisher", RolePublisher, false},
		{"distributor", RoleDistributor, false},
		{"subscriber", RoleSubscriber, false},
		{"", "", true},
		{"Publisher", "", true},
		{"admin", "", true},
	}
	for _, tt := range tests {
		got, err := ParseRole(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ParseRole(%q) = %q, %v", tt.in, got, err)
		}
		if err != nil {
			for _, r := range []string{"publisher", "distributor", "subscriber"} {
				if !strings.Contains(err.Error(), r) {
					t.Errorf("ParseRole(%q) error %q does not list %s", tt.in, err, r)
				}
			}
		}
	}
}

func TestIssueRefusesBadInput(t *testing.T) {
	dir := newCA(t)
	tests := []struct {
		name  string
		node  string
		role  Role
		hosts []string
	}{
		{"empty name", "", RolePublisher, nil},
		{"too long", strings.Repeat("a", 65), RolePublisher, nil},
		{"slash", "a/b", RolePublisher, nil},
		{"dot dot", "..", RolePublisher, nil},
		{"leading dash", "-x", RolePublisher, nil},
		{"space", "a b", RolePublisher, nil},
		{"non-ASCII", "nœud", RolePublisher, nil},
		{"ca", "ca", RolePublisher, nil},
		{"CA", "CA", RolePublisher, nil},
		{"bad role", "node", Role("admin"), nil},
		{"empty role", "node", Role(""), nil},
		{"empty host", "node", RolePublisher, []string{""}},
		{"host with space", "node", RolePublisher, []string{"a b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Issue(dir, tt.node, tt.role, tt.hosts, false); err == nil {
				t.Fatalf("Issue(%q, %q, %q) accepted", tt.node, tt.role, tt.hosts)
			}
		})
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("refused issues left files behind: %d entries", len(entries))
	}
	if err := ValidateName(strings.Repeat("a", 64)); err != nil {
		t.Errorf("64-character name refused: %v", err)
	}
	if err := ValidateName("web-01.tokyo_a"); err != nil {
		t.Errorf("valid name refused: %v", err)
	}
	// The letters meant are ASCII ones: say so.
	for _, name := range []string{"café", "éclair", "web 01"} {
		want := fmt.Sprintf("invalid node name %q: use ASCII letters a-z A-Z, digits and . _ - (starting with a letter or digit)", name)
		if err := ValidateName(name); err == nil || err.Error() != want {
			t.Errorf("ValidateName(%q) = %v, want %s", name, err, want)
		}
	}
}

func TestIssueNeedsCA(t *testing.T) {
	dir := newCA(t)
	other := newCA(t)
	tests := []struct {
		name    string
		setup   func(t *testing.T) string // returns the CA dir
		wantErr string                    // substring, usually the file name
	}{
		{"missing dir", func(t *testing.T) string { return filepath.Join(t.TempDir(), "none") }, "ca.crt"},
		{"missing key", func(t *testing.T) string {
			d := t.TempDir()
			copyFile(t, filepath.Join(dir, "ca.crt"), filepath.Join(d, "ca.crt"), 0o644)
			return d
		}, "ca.key"},
		{"key of another CA", func(t *testing.T) string {
			d := t.TempDir()
			copyFile(t, filepath.Join(dir, "ca.crt"), filepath.Join(d, "ca.crt"), 0o644)
			copyFile(t, filepath.Join(other, "ca.key"), filepath.Join(d, "ca.key"), 0o600)
			return d
		}, "does not belong"},
		{"node certificate as CA", func(t *testing.T) string {
			d := t.TempDir()
			if _, err := Issue(dir, "n", RolePublisher, nil, false); err != nil {
				t.Fatal(err)
			}
			copyFile(t, filepath.Join(dir, "n.crt"), filepath.Join(d, "ca.crt"), 0o644)
			copyFile(t, filepath.Join(dir, "n.key"), filepath.Join(d, "ca.key"), 0o600)
			return d
		}, "not a CA"},
		{"readable CA key", func(t *testing.T) string {
			d := t.TempDir()
			copyFile(t, filepath.Join(dir, "ca.crt"), filepath.Join(d, "ca.crt"), 0o644)
			copyFile(t, filepath.Join(dir, "ca.key"), filepath.Join(d, "ca.key"), 0o644)
			return d
		}, "0644"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.setup(t)
			_, err := Issue(d, "node", RolePublisher, nil, false)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Issue: %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(to, mode); err != nil {
		t.Fatal(err)
	}
}

// A certificate out of its validity is said to be so, with the date, not
// "not issued by a trusted TED CA".
func TestVerifyRoleSaysExpired(t *testing.T) {
	dir := t.TempDir()
	if _, err := InitCA(dir, false); err != nil {
		t.Fatal(err)
	}
	caCert, caKey, err := loadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	roleValue, err := roleExtension(RoleSubscriber)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(notBefore, notAfter time.Time) *x509.Certificate {
		key, serial := keyAndSerial(t)
		tmpl := &x509.Certificate{
			SerialNumber: serial, Subject: pkix.Name{CommonName: "web-01"},
			NotBefore: notBefore, NotAfter: notAfter, BasicConstraintsValid: true,
			KeyUsage:        x509.KeyUsageDigitalSignature,
			ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			ExtraExtensions: []pkix.Extension{{Id: roleOID, Value: roleValue}},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	now := time.Now().Truncate(time.Second)
	expired := leaf(now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	err = VerifyRole(expired, pool, RoleSubscriber)
	if want := `certificate "web-01" expired on ` + now.Add(-24*time.Hour).UTC().Format(time.RFC3339) + ": renew it"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("expired: %v, want %q...", err, want)
	}
	early := leaf(now.Add(24*time.Hour), now.Add(48*time.Hour))
	if err := VerifyRole(early, pool, RoleSubscriber); err == nil || !strings.Contains(err.Error(), "is not valid until") {
		t.Errorf("not yet valid: %v", err)
	}
	if err := VerifyRole(leaf(now.Add(-time.Hour), now.Add(time.Hour)), pool, RoleSubscriber); err != nil {
		t.Errorf("valid: %v", err)
	}
}
