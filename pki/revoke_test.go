package pki

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestIssueSpecGroupsAndIndex(t *testing.T) {
	dir := newCA(t)
	spec := Spec{Name: "web-1", Role: RoleSubscriber, Groups: []string{"web", "ca"}, Validity: 48 * time.Hour}
	files, err := IssueSpec(dir, spec, false)
	if err != nil {
		t.Fatalf("IssueSpec: %v", err)
	}
	cert := mustLoad(t, files.Cert)
	groups, err := GroupsOf(cert)
	if err != nil || !slices.Equal(groups, spec.Groups) {
		t.Errorf("GroupsOf = %v, %v; want %v", groups, err, spec.Groups)
	}
	if d := time.Until(cert.NotAfter); d < 47*time.Hour || d > 48*time.Hour {
		t.Errorf("certificate valid for %v more, want 48h", d)
	}
	plain, err := IssueSpec(dir, Spec{Name: "relay", Role: RoleDistributor}, false)
	if err != nil {
		t.Fatal(err)
	}
	if groups, err := GroupsOf(mustLoad(t, plain.Cert)); err != nil || groups != nil {
		t.Errorf("GroupsOf a certificate without groups = %v, %v", groups, err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := ca.IssuedCertificates()
	if err != nil {
		t.Fatal(err)
	}
	if len(issued) != 2 {
		t.Fatalf("index = %+v, want 2 certificates", issued)
	}
	first := issued[0]
	if first.Serial != SerialHex(cert) || first.Name != "web-1" || first.Role != RoleSubscriber ||
		!slices.Equal(first.Groups, spec.Groups) || !first.NotAfter.Equal(cert.NotAfter) || first.How != "issue" {
		t.Errorf("index entry = %+v", first)
	}
	if issued[1].Name != "relay" || issued[1].Groups != nil {
		t.Errorf("second index entry = %+v", issued[1])
	}

	// A damaged line is named.
	index := filepath.Join(dir, "issued.jsonl")
	f, err := os.OpenFile(index, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "{not json")
	f.Close()
	if _, err := ca.IssuedCertificates(); err == nil || !strings.Contains(err.Error(), index+":3:") {
		t.Errorf("damaged index: %v", err)
	}
	// No index: nothing issued.
	if issued, err := loadTestCA(t).IssuedCertificates(); err != nil || issued != nil {
		t.Errorf("IssuedCertificates of a new CA = %v, %v", issued, err)
	}
}

func TestValidateGroups(t *testing.T) {
	many := make([]string, 33)
	for i := range many {
		many[i] = fmt.Sprintf("g%d", i)
	}
	for _, tc := range []struct {
		groups []string
		want   string
	}{
		{nil, ""},
		{[]string{"web", "eu-west.1", "ca"}, ""},
		{many[:32], ""},
		{many, "33 groups: at most 32"},
		{[]string{"web", "web"}, `group "web" is given twice`},
		{[]string{"web prod"}, `invalid group "web prod": use ASCII letters`},
		{[]string{""}, `invalid group "": must be 1 to 64 characters`},
		{[]string{"-web"}, `invalid group "-web"`},
	} {
		err := ValidateGroups(tc.groups)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("ValidateGroups(%q) = %v, want %q", tc.groups, err, tc.want)
		}
	}
	if _, err := IssueSpec(newCA(t), Spec{Name: "n", Role: RoleSubscriber, Groups: []string{"a/b"}}, false); err == nil || !strings.Contains(err.Error(), `invalid group "a/b"`) {
		t.Errorf("IssueSpec with a bad group: %v", err)
	}
}

func TestRevoke(t *testing.T) {
	dir := newCA(t)
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for _, name := range []string{"a", "b", "c"} {
		files, err := IssueSpec(dir, Spec{Name: name, Role: RoleSubscriber}, false)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, mustLoad(t, files.Cert))
	}
	before := time.Now().Unix()
	r1, err := ca.Revoke([]string{SerialHex(certs[0])})
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if r1.Number.Int64() < before || !r1.Revoked(certs[0]) || r1.Revoked(certs[1]) {
		t.Errorf("first list: number %v, serials %v", r1.Number, r1.Serials())
	}
	// Upper case with 0x, a serial given twice, one already revoked.
	upper := "0X" + strings.ToUpper(SerialHex(certs[1]))
	r2, err := ca.Revoke([]string{upper, SerialHex(certs[1]), SerialHex(certs[0])})
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	want := []string{SerialHex(certs[0]), SerialHex(certs[1])}
	slices.Sort(want)
	if r2.Number.Cmp(r1.Number) <= 0 || !slices.Equal(r2.Serials(), want) {
		t.Errorf("second list: number %v, serials %v, want %v", r2.Number, r2.Serials(), want)
	}
	if !r2.Newer(r1) || r1.Newer(r2) || !r1.Newer(nil) || (*Revocations)(nil).Newer(r1) {
		t.Error("Newer does not follow the list number")
	}
	if (*Revocations)(nil).Revoked(certs[0]) {
		t.Error("no list revokes")
	}

	loaded, err := LoadRevocations(ca.CRLPath(), []*x509.Certificate{ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Number.Cmp(r2.Number) != 0 || !slices.Equal(loaded.Serials(), want) {
		t.Errorf("loaded %v %v", loaded.Number, loaded.Serials())
	}
	data, err := os.ReadFile(ca.CRLPath())
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(data); block == nil || block.Type != "X509 CRL" {
		t.Errorf("%s is not a PEM CRL", ca.CRLPath())
	}
	// DER, as distributors pass it on, parses as well.
	if _, err := ParseRevocations("peer", loaded.Raw, []*x509.Certificate{ca.Cert}); err != nil {
		t.Errorf("DER: %v", err)
	}
	other := loadTestCA(t)
	if _, err := ParseRevocations("peer", loaded.Raw, []*x509.Certificate{other.Cert}); err == nil || !strings.Contains(err.Error(), "peer: revocation list not signed by our CA") {
		t.Errorf("list of another CA: %v", err)
	}
	if _, err := ParseRevocations("peer", []byte("junk"), []*x509.Certificate{ca.Cert}); err == nil || !strings.Contains(err.Error(), "peer: not a revocation list") {
		t.Errorf("junk: %v", err)
	}

	for _, bad := range []string{"", "xyz", "-1", "0", "+ab", "a_b"} {
		if _, err := ca.Revoke([]string{SerialHex(certs[2]), bad}); err == nil || !strings.Contains(err.Error(), "invalid serial number") {
			t.Errorf("Revoke(%q): %v", bad, err)
		}
	}
	if after, err := LoadRevocations(ca.CRLPath(), []*x509.Certificate{ca.Cert}); err != nil || after.Number.Cmp(r2.Number) != 0 || after.RevokedSerial(SerialHex(certs[2])) {
		t.Errorf("a refused revocation changed the list: %v", err)
	}
}

func TestRevokeConcurrently(t *testing.T) {
	dir := newCA(t)
	const n = 6
	before := time.Now().Unix()
	serials := make([]string, n)
	for i := range n {
		serials[i] = fmt.Sprintf("%x", 1000+i)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			ca, err := LoadCA(dir)
			if err == nil {
				_, err = ca.Revoke(serials[i : i+1])
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := LoadRevocations(ca.CRLPath(), []*x509.Certificate{ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(serials)
	// Each list's number is more than the last's, and at least the clock.
	if r.Number.Int64() < before+n-1 || !slices.Equal(r.Serials(), serials) {
		t.Errorf("after %d revocations at once: number %v, serials %v", n, r.Number, r.Serials())
	}
}

func TestLoadCACertificates(t *testing.T) {
	a, b := loadTestCA(t), loadTestCA(t)
	file := filepath.Join(t.TempDir(), "ca.crt")
	data := append(EncodeCertificate(a.Cert), EncodeCertificate(b.Cert)...)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	certs, err := LoadCACertificates(file)
	if err != nil || len(certs) != 2 || !certs[0].Equal(a.Cert) || !certs[1].Equal(b.Cert) {
		t.Errorf("LoadCACertificates = %d certificates, %v", len(certs), err)
	}
	if err := os.WriteFile(file, []byte("nothing"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCACertificates(file); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("file without certificates: %v", err)
	}
}

// A CA replacement: tls.ca holds both CAs, the old one has made several
// lists, and the new one's first list must still be the newer, since a
// node keeps only the highest number.
func TestRevokeNumbersGrowAcrossCAs(t *testing.T) {
	// The old CA's lists were made an hour before the replacement.
	revokeNow = func() time.Time { return time.Now().Add(-time.Hour) }
	t.Cleanup(func() { revokeNow = time.Now })
	oldCA := loadTestCA(t)
	var last *Revocations
	for i := range 3 {
		r, err := oldCA.Revoke([]string{fmt.Sprintf("%x", 100+i)})
		if err != nil {
			t.Fatal(err)
		}
		last = r
	}
	revokeNow = time.Now
	newCA := loadTestCA(t)
	// By serial: a certificate of the old CA, revoked by the new one.
	first, err := newCA.Revoke([]string{"ab"})
	if err != nil {
		t.Fatal(err)
	}
	bundle := []*x509.Certificate{oldCA.Cert, newCA.Cert}
	parsed, err := ParseRevocations("new CA", first.Raw, bundle)
	if err != nil {
		t.Fatal(err)
	}
	if !parsed.Newer(last) {
		t.Errorf("the new CA's first list (number %v) is not newer than the old CA's last (number %v)", parsed.Number, last.Number)
	}
	if !parsed.RevokedSerial("ab") {
		t.Error("the new CA's list does not revoke the old certificate's serial")
	}
}
