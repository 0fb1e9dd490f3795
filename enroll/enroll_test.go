package enroll

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ted/pki"
	"ted/transport"
)

// fleet is a CA and the distributors of a test, listening on loopback.
type fleet struct {
	t   *testing.T
	dir string
	ca  *pki.CA
	fp  string
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	dir := t.TempDir()
	if _, err := pki.InitCA(dir, false); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &fleet{t: t, dir: dir, ca: ca, fp: pki.Fingerprint(ca.Cert)}
}

// cred issues a certificate as spec says and loads it.
func (f *fleet) cred(spec pki.Spec) *transport.Credentials {
	f.t.Helper()
	files, err := pki.IssueSpec(f.dir, spec, false)
	if err != nil {
		f.t.Fatal(err)
	}
	cred, err := transport.LoadCredentials(filepath.Join(f.dir, "ca.crt"), files.Cert, files.Key, spec.Role)
	if err != nil {
		f.t.Fatal(err)
	}
	return cred
}

// syncBuffer is a log sink that tests read while handlers write.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type server struct {
	h    *Handler
	ln   *transport.Listener
	addr string
	log  *syncBuffer
}

// distributor starts a distributor's listener with an enrollment handler:
// signing if signs, passing requests on to parents otherwise.
func (f *fleet) distributor(name string, signs bool, parents ...string) *server {
	f.t.Helper()
	cred := f.cred(pki.Spec{Name: name, Role: pki.RoleDistributor})
	log := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(log, nil))
	cfg := Config{Cred: cred, CACerts: []*x509.Certificate{f.ca.Cert}, Log: logger,
		Parents: func() []string { return parents }, QUIC: transport.QUICConfig{Logger: logger, HandshakeIdleTimeout: time.Second}}
	if signs {
		cfg.CA = f.ca
	}
	h, err := New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	ln, err := transport.Listen("127.0.0.1:0", cred, nil, transport.QUICConfig{Logger: logger})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = ln.Close() })
	ln.HandleEnroll(h.Serve)
	return &server{h: h, ln: ln, addr: ln.Addr().String(), log: log}
}

func (f *fleet) token(spec pki.TokenSpec) (string, pki.Token) {
	f.t.Helper()
	s, tok, err := f.ca.NewToken(spec)
	if err != nil {
		f.t.Fatal(err)
	}
	return s, tok
}

func quiet() transport.QUICConfig {
	return transport.QUICConfig{Logger: slog.New(slog.DiscardHandler)}
}

// enrollAs dials addr pinning the fleet's CA and enrolls name.
func (f *fleet) enrollAs(addr, token, name string) (*x509.Certificate, error) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, f.fp, quiet())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	key, _, err := NewKey()
	if err != nil {
		f.t.Fatal(err)
	}
	cert, err := c.Enroll(ctx, token, name, key)
	if err == nil && !key.PublicKey.Equal(cert.PublicKey) {
		f.t.Fatal("certificate is not for our key")
	}
	return cert, err
}

func TestEnrollSignsOnceWithTheTokensRoleAndGroups(t *testing.T) {
	f := newFleet(t)
	d := f.distributor("dist-1", true)
	token, tok := f.token(pki.TokenSpec{Role: pki.RoleSubscriber, Groups: []string{"web", "eu"}})

	cert, err := f.enrollAs(d.addr, token, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	role, _ := pki.RoleOf(cert)
	groups, _ := pki.GroupsOf(cert)
	if cert.Subject.CommonName != "web-1" || role != pki.RoleSubscriber || strings.Join(groups, ",") != "web,eu" {
		t.Fatalf("got %s role %s groups %v", cert.Subject.CommonName, role, groups)
	}
	if !strings.Contains(d.log.String(), "enrolled web-1 (subscriber, groups web,eu) with token "+tok.ID) {
		t.Fatalf("no enrollment line in the log:\n%s", d.log)
	}
	if strings.Contains(d.log.String(), token) {
		t.Fatal("the token itself is in the log")
	}
	issued, err := f.ca.IssuedCertificates()
	if err != nil {
		t.Fatal(err)
	}
	last := issued[len(issued)-1]
	if last.Name != "web-1" || last.How != "enroll" || last.Serial != pki.SerialHex(cert) {
		t.Fatalf("index: %+v", last)
	}

	_, err = f.enrollAs(d.addr, token, "web-2")
	if !errors.Is(err, ErrTokenUsed) || !strings.Contains(err.Error(), "already used") || !strings.Contains(err.Error(), "web-1") {
		t.Fatalf("second use: %v", err)
	}
	if n := served(t, d.h, opEnroll, kindTokenUsed); n != 1 {
		t.Fatalf("refusals counted: %v", n)
	}
}

func TestEnrollRefusesExpiredAndForeignTokens(t *testing.T) {
	f := newFleet(t)
	d := f.distributor("dist-1", true)
	token, _ := f.token(pki.TokenSpec{Role: pki.RoleSubscriber, TTL: time.Hour})
	// The clock is set before the handler is (again) given to the
	// listener, which publishes it to the connections' goroutines; only
	// its offset changes afterwards.
	var ahead atomic.Int64
	d.h.cfg.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	d.ln.HandleEnroll(d.h.Serve)
	ahead.Store(int64(2 * time.Hour))
	_, err := f.enrollAs(d.addr, token, "web-1")
	if !errors.Is(err, ErrTokenExpired) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}
	ahead.Store(0)

	other := newFleet(t)
	foreign, _ := other.token(pki.TokenSpec{Role: pki.RoleSubscriber})
	_, err = f.enrollAs(d.addr, foreign, "web-1")
	if !errors.Is(err, ErrTokenInvalid) || !strings.Contains(err.Error(), "not signed by this CA") {
		t.Fatalf("foreign token: %v", err)
	}
	// Neither was spent: the good one still works once its time is right.
	if _, err := f.enrollAs(d.addr, token, "web-1"); err != nil {
		t.Fatal(err)
	}
}

func TestEnrollBoundNameIsTheOnlyOne(t *testing.T) {
	f := newFleet(t)
	d := f.distributor("dist-1", true)
	token, _ := f.token(pki.TokenSpec{Role: pki.RoleSubscriber, Name: "db-1"})
	_, err := f.enrollAs(d.addr, token, "db-2")
	if !errors.Is(err, ErrName) || !strings.Contains(err.Error(), `enrolls only "db-1"`) {
		t.Fatalf("other name: %v", err)
	}
	if _, err := f.enrollAs(d.addr, token, "db-1"); err != nil {
		t.Fatalf("the bound name after a refusal: %v", err)
	}
}

func TestDialRefusesAnotherCA(t *testing.T) {
	f := newFleet(t)
	d := f.distributor("dist-1", true)
	other := newFleet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Dial(ctx, d.addr, other.fp, quiet())
	if err == nil || !strings.Contains(err.Error(), "CA fingerprint mismatch") || !strings.Contains(err.Error(), other.fp) {
		t.Fatalf("got %v", err)
	}
	// Only the CA was asked for.
	if n := len(series(t, d.h)); n != 1 || served(t, d.h, opCA, "ok") != 1 {
		t.Fatalf("requests served: %d", n)
	}
}

// An impostor that sends the right CA certificate but holds a certificate
// of another CA is refused before the token leaves.
func TestDialRefusesServerOfAnotherCA(t *testing.T) {
	f := newFleet(t)
	impostor := newFleet(t)
	cred := impostor.cred(pki.Spec{Name: "dist-x", Role: pki.RoleDistributor})
	h, err := New(Config{Cred: cred, CACerts: []*x509.Certificate{f.ca.Cert}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := transport.Listen("127.0.0.1:0", cred, nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln.HandleEnroll(h.Serve)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = Dial(ctx, ln.Addr().String(), f.fp, quiet())
	if err == nil || !strings.Contains(err.Error(), "not signed by the CA it sent") || !strings.Contains(err.Error(), "nothing was sent") {
		t.Fatalf("got %v", err)
	}
}

func TestEnrollThroughADistributorThatDoesNotSign(t *testing.T) {
	f := newFleet(t)
	top := f.distributor("dist-1", true)
	down := f.distributor("dist-2", false, "127.0.0.1:1", top.addr) // the first parent is down
	token, _ := f.token(pki.TokenSpec{Role: pki.RoleDistributor})
	cert, err := f.enrollAs(down.addr, token, "dist-3")
	if err != nil {
		t.Fatal(err)
	}
	if role, _ := pki.RoleOf(cert); role != pki.RoleDistributor {
		t.Fatalf("role %s", role)
	}
	if served(t, down.h, opEnroll, "passed_on") != 1 || served(t, top.h, opEnroll, "signed") != 1 {
		t.Fatal("not passed on and signed")
	}
	// The refusal of a spent token comes back through the same way.
	if _, err := f.enrollAs(down.addr, token, "dist-4"); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("second use through dist-2: %v", err)
	}
	lone := f.distributor("dist-5", false)
	if _, err := f.enrollAs(lone.addr, token, "dist-6"); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "nor has a parent") {
		t.Fatalf("no parent: %v", err)
	}
}

func renewVia(t *testing.T, f *fleet, addr string, cred *transport.Credentials) (*x509.Certificate, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	key, _, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return Renew(ctx, addr, cred, []*x509.Certificate{f.ca.Cert}, key, quiet())
}

func TestRenewKeepsNameRoleGroupsAndLifetime(t *testing.T) {
	f := newFleet(t)
	top := f.distributor("dist-1", true)
	down := f.distributor("dist-2", false, top.addr)
	const validity = 2 * time.Hour
	cred := f.cred(pki.Spec{Name: "web-1", Role: pki.RoleSubscriber, Groups: []string{"web"}, Validity: validity})
	// Renewed twice, the second time with the renewed certificate: the
	// lifetime stays what it was issued for (the backdating of NotBefore
	// is not added at each renewal).
	for _, addr := range []string{top.addr, down.addr} {
		old := cred.Self()
		key, _, _ := NewKey()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cert, err := Renew(ctx, addr, cred, []*x509.Certificate{f.ca.Cert}, key, quiet())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		groups, _ := pki.GroupsOf(cert)
		life := cert.NotAfter.Sub(cert.NotBefore)
		if cert.Subject.CommonName != "web-1" || strings.Join(groups, ",") != "web" || pki.SerialHex(cert) == old.Serial {
			t.Fatalf("renewed: %s groups %v serial %s", cert.Subject.CommonName, groups, pki.SerialHex(cert))
		}
		if d := life - (validity + pki.ClockSkew); d < -time.Second || d > time.Second {
			t.Fatalf("renewed through %s: lifetime %v, want %v (%v valid, %v backdated)", addr, life, validity+pki.ClockSkew, validity, pki.ClockSkew)
		}
		issued, _ := f.ca.IssuedCertificates()
		if last := issued[len(issued)-1]; last.How != "renew" || last.Name != "web-1" || last.Renews != old.Serial {
			t.Fatalf("index: %+v", last)
		}
		if err := cred.Replace(tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRenewRefusesRevokedCertificate(t *testing.T) {
	f := newFleet(t)
	top := f.distributor("dist-1", true)
	cred := f.cred(pki.Spec{Name: "web-1", Role: pki.RoleSubscriber})
	if _, err := f.ca.Revoke([]string{cred.Self().Serial}); err != nil {
		t.Fatal(err)
	}
	// The listener does not know of the revocation; the signer does.
	_, err := renewVia(t, f, top.addr, cred)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("got %v", err)
	}
}

func TestRenewRefusesAProofByAnotherKey(t *testing.T) {
	f := newFleet(t)
	top := f.distributor("dist-1", true)
	victim := f.cred(pki.Spec{Name: "web-1", Role: pki.RoleSubscriber})
	thief := f.cred(pki.Spec{Name: "web-2", Role: pki.RoleSubscriber})
	key, _, _ := NewKey()
	// The victim's certificate, which is public, with the thief's key.
	forged := tls.Certificate{Certificate: victim.Certificate().Certificate, PrivateKey: thief.Certificate().PrivateKey}
	req, _, err := renewRequest(forged, key)
	if err != nil {
		t.Fatal(err)
	}
	resp := top.h.handle(context.Background(), req, "test")
	if err := resp.err(); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not signed by the certificate's key") {
		t.Fatalf("got %v", err)
	}
	// A request for another name, proven by the right key, neither.
	req, _, _ = renewRequest(thief.Certificate(), key)
	other, _ := newCSR("web-1", key)
	req.CSR = other
	req.Proof, _ = signProof(thief.Certificate().PrivateKey.(crypto.Signer), other)
	if err := top.h.handle(context.Background(), req, "test").err(); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), `the request is for "web-1", the certificate for "web-2"`) {
		t.Fatalf("got %v", err)
	}
}

func TestRenewHereAndReplace(t *testing.T) {
	f := newFleet(t)
	top := f.distributor("dist-1", true)
	cred := f.cred(pki.Spec{Name: "dist-9", Role: pki.RoleDistributor})
	key, _, _ := NewKey()
	cert, err := top.h.RenewHere(cred, key)
	if err != nil {
		t.Fatal(err)
	}
	old := cred.Self().Serial
	if err := cred.Replace(tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key}); err != nil {
		t.Fatal(err)
	}
	if cred.Self().Serial == old || cred.Self().Serial != pki.SerialHex(cert) {
		t.Fatal("credentials not replaced")
	}
	// The renewed credentials work for a session.
	if _, err := renewVia(t, f, top.addr, cred); err != nil {
		t.Fatalf("renewing again with the renewed certificate: %v", err)
	}
	wrong := f.cred(pki.Spec{Name: "dist-8", Role: pki.RoleDistributor})
	if err := cred.Replace(wrong.Certificate()); err == nil || !strings.Contains(err.Error(), `issued to "dist-8"`) {
		t.Fatalf("replace with another name: %v", err)
	}
}

// A ted/1 session is never taken for enrollment, and an enrollment
// connection never becomes a session.
func TestSessionsAndEnrollmentStayApart(t *testing.T) {
	f := newFleet(t)
	d := f.distributor("dist-1", true)
	sub := f.cred(pki.Spec{Name: "web-1", Role: pki.RoleSubscriber})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := transport.Dial(ctx, d.addr, sub, pki.RoleDistributor, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close(nil)
	got, err := d.ln.Accept(ctx)
	if err != nil || got.Peer().Name != "web-1" {
		t.Fatalf("accept: %v %v", got, err)
	}
	defer got.Close(nil)
	if _, err := renewVia(t, f, d.addr, sub); err != nil {
		t.Fatal(err)
	}
	if n := served(t, d.h, opRenew, "signed"); n != 1 {
		t.Fatalf("renewals served: %v", n)
	}
	// Sessions are accepted in order: had the enrollment connection been
	// admitted, Accept would return it before the session dialled now.
	other := f.cred(pki.Spec{Name: "web-2", Role: pki.RoleSubscriber})
	sess2, err := transport.Dial(ctx, d.addr, other, pki.RoleDistributor, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer sess2.Close(nil)
	next, err := d.ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close(nil)
	if next.Peer().Serial != other.Self().Serial {
		t.Fatalf("Accept returned %s (serial %s), not the session of web-2: the enrollment connection was admitted", next.Peer().Name, next.Peer().Serial)
	}
}

func TestListenerWithoutHandlerRefusesEnrollment(t *testing.T) {
	f := newFleet(t)
	cred := f.cred(pki.Spec{Name: "dist-1", Role: pki.RoleDistributor})
	ln, err := transport.Listen("127.0.0.1:0", cred, nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = Dial(ctx, ln.Addr().String(), f.fp, quiet())
	if err == nil || !strings.Contains(err.Error(), "does not speak "+transport.EnrollALPN) {
		t.Fatalf("got %v", err)
	}
}

func TestRenewAt(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		life, before, want time.Duration // want: before expiry
	}{
		{life: 2 * 365 * 24 * time.Hour, want: 30 * 24 * time.Hour},
		{life: 30 * 24 * time.Hour, want: 10 * 24 * time.Hour},
		// More than half the lifetime is half of it: renewed certificates
		// would be due at once, for ever.
		{life: 2 * time.Hour, before: 3 * time.Hour, want: time.Hour},
		{life: 7 * 24 * time.Hour, before: 720 * time.Hour, want: 84 * time.Hour},
		{life: 7 * 24 * time.Hour, before: 84 * time.Hour, want: 84 * time.Hour},
		{life: 365 * 24 * time.Hour, before: time.Hour, want: time.Hour},
	} {
		end := start.Add(tt.life)
		if got := end.Sub(RenewAt(start, end, tt.before)); got != tt.want {
			t.Errorf("lifetime %v, renew_before %v: renews %v before expiry, want %v", tt.life, tt.before, got, tt.want)
		}
	}
}

func TestStageCommit(t *testing.T) {
	dir := t.TempDir()
	key, crt := filepath.Join(dir, "n.key"), filepath.Join(dir, "n.crt")
	s, err := Stage(File{Path: key, Data: []byte("k1"), Private: true}, File{Path: crt, Data: []byte("c1")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(false); err != nil {
		t.Fatal(err)
	}
	for path, mode := range map[string]os.FileMode{key: 0o600, crt: 0o644} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: %v %v, want mode %o", path, fi, err, mode)
		}
	}
	s, _ = Stage(File{Path: key, Data: []byte("k2"), Private: true})
	if err := s.Commit(false); !errors.Is(err, pki.ErrExists) {
		t.Fatalf("overwrite without force: %v", err)
	}
	// What was not put in place is kept, and named, until discarded: it
	// may be a key whose token is spent.
	pending := strings.TrimSuffix(s.Pending(), " (for "+key+")")
	if data, err := os.ReadFile(pending); err != nil || string(data) != "k2" {
		t.Fatalf("after a failed commit, pending %q: %q %v", s.Pending(), data, err)
	}
	s.Discard()
	if _, err := os.Stat(pending); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("discarded file still there: %v", err)
	}
	s, _ = Stage(File{Path: key, Data: []byte("k2"), Private: true})
	if err := s.Commit(true); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(key); string(data) != "k2" {
		t.Fatalf("key holds %q", data)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

// series are the handler's request counts, by "op outcome".
func series(t *testing.T, h *Handler) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h.Collector())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out[labels["op"]+" "+labels["outcome"]] = m.GetCounter().GetValue()
		}
	}
	return out
}

func served(t *testing.T, h *Handler, op, outcome string) float64 {
	t.Helper()
	return series(t, h)[op+" "+outcome]
}

// A token that names no node cannot take over a name whose certificate is
// in force; one made for the name can, and a revoked name is free again.
func TestEnrollRefusesTakingOverANameInUse(t *testing.T) {
	f := newFleet(t)
	d := f.distributor("dist-1", true)
	victim := f.cred(pki.Spec{Name: "web-1", Role: pki.RoleSubscriber})
	token, tok := f.token(pki.TokenSpec{Role: pki.RoleSubscriber})
	_, err := f.enrollAs(d.addr, token, "web-1")
	for _, want := range []string{`"web-1" already has a certificate in force (serial ` + victim.Self().Serial, tok.ID,
		"ted pki revoke --dir " + f.dir + " web-1", "ted pki token --name web-1"} {
		if !errors.Is(err, ErrName) || !strings.Contains(err.Error(), want) {
			t.Fatalf("enrolling a name in use with an open token: %v; want %q", err, want)
		}
	}
	// The token was not spent on the refusal; once the certificate is
	// revoked, the name is free.
	if _, err := f.ca.Revoke([]string{victim.Self().Serial}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.enrollAs(d.addr, token, "web-1"); err != nil {
		t.Fatalf("after revocation: %v", err)
	}
	// A token made for the name replaces the certificate in force.
	bound, _ := f.token(pki.TokenSpec{Role: pki.RoleSubscriber, Name: "web-1"})
	if _, err := f.enrollAs(d.addr, bound, "web-1"); err != nil {
		t.Fatalf("token bound to the name: %v", err)
	}
	// The distributor's own list counts too.
	other := f.cred(pki.Spec{Name: "web-2", Role: pki.RoleSubscriber})
	d.h.cfg.Cred.SetRevocations(revokedElsewhere(t, f, other.Self().Serial))
	open2, _ := f.token(pki.TokenSpec{Role: pki.RoleSubscriber})
	if _, err := f.enrollAs(d.addr, open2, "web-2"); err != nil {
		t.Fatalf("name whose certificate the distributor's list revokes: %v", err)
	}
}

// revokedElsewhere is a revocation list of the fleet's CA, revoking
// serials, made in a copy of the CA directory: the signer's own
// revoked.crl knows nothing of it.
func revokedElsewhere(t *testing.T, f *fleet, serials ...string) *pki.Revocations {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"ca.crt", "ca.key"} {
		data, err := os.ReadFile(filepath.Join(f.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	list, err := ca.Revoke(serials)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// A certificate revoked by the list the signing distributor holds (passed
// down, or loaded from a tls.crl other than ca_dir's) cannot renew, though
// the CA directory's list does not name it.
func TestRenewRefusedByTheDistributorsList(t *testing.T) {
	f := newFleet(t)
	top := f.distributor("dist-1", true)
	cred := f.cred(pki.Spec{Name: "web-1", Role: pki.RoleSubscriber})
	list := revokedElsewhere(t, f, cred.Self().Serial)
	top.h.cfg.Cred.SetRevocations(list)
	// The listener would refuse the revoked peer's handshake; the signer
	// is asked directly, as a forwarding distributor's request reaches it.
	key, _, _ := NewKey()
	req, _, err := renewRequest(cred.Certificate(), key)
	if err != nil {
		t.Fatal(err)
	}
	err = top.h.handle(context.Background(), req, "test").err()
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "revoked (revocation list number "+list.Number.String()) {
		t.Fatalf("got %v", err)
	}
}

// A certificate renews once: a copy of its key (stolen before the
// renewal) cannot get a certificate of its own afterwards.
func TestRenewOnlyOnce(t *testing.T) {
	f := newFleet(t)
	top := f.distributor("dist-1", true)
	cred := f.cred(pki.Spec{Name: "web-1", Role: pki.RoleSubscriber})
	first, err := renewVia(t, f, top.addr, cred)
	if err != nil {
		t.Fatal(err)
	}
	_, err = renewVia(t, f, top.addr, cred)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "already renewed, by serial "+pki.SerialHex(first)) ||
		!strings.Contains(err.Error(), "ted pki token --name web-1") {
		t.Fatalf("second renewal of one certificate: %v", err)
	}
	if !strings.Contains(top.log.String(), "its key may be in other hands") {
		t.Fatalf("no warning logged:\n%s", top.log)
	}
}

// A certificate that cannot be recorded in the CA's index is not handed
// out: it could not be revoked by name.
func TestRecordFailureHandsOutNothing(t *testing.T) {
	f := newFleet(t)
	d := f.distributor("dist-1", true)
	index := filepath.Join(f.dir, "issued.jsonl")
	if err := os.Remove(index); err != nil {
		t.Fatal(err)
	}
	// A directory where the index belongs: appending to it fails.
	if err := os.Mkdir(index, 0o755); err != nil {
		t.Fatal(err)
	}
	token, _ := f.token(pki.TokenSpec{Role: pki.RoleSubscriber, Name: "web-1"})
	cert, err := f.enrollAs(d.addr, token, "web-1")
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "not handed out") || cert != nil {
		t.Fatalf("enrollment with an index that cannot be written: %v, %v", cert, err)
	}
}

// A connection that sends no request within the first-request limit is
// closed, and so gives its slot back.
func TestFirstRequestLimit(t *testing.T) {
	f := newFleet(t)
	d := f.distributor("dist-1", true)
	d.h.firstRequest = 100 * time.Millisecond
	d.ln.HandleEnroll(d.h.Serve) // published to the listener's goroutines after the change
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := transport.DialEnroll(ctx, d.addr, nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(nil)
	select {
	case <-conn.Context().Done():
	case <-ctx.Done():
		t.Fatal("a connection that asked nothing is still open")
	}
}

func TestRenewalRecover(t *testing.T) {
	f := newFleet(t)
	dir := t.TempDir()
	r := Renewal{Cert: filepath.Join(dir, "n.crt"), Key: filepath.Join(dir, "n.key")}
	issue := func() (certPEM, keyPEM []byte, cert *x509.Certificate) {
		key, keyPEM, err := NewKey()
		if err != nil {
			t.Fatal(err)
		}
		cert, err = f.ca.Sign(pki.Spec{Name: "n", Role: pki.RoleSubscriber}, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		return pki.EncodeCertificate(cert), keyPEM, cert
	}
	write := func(path string, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	inPlace := func() string {
		c, _ := os.ReadFile(r.Cert)
		k, _ := os.ReadFile(r.Key)
		if _, err := tls.X509KeyPair(c, k); err != nil {
			t.Fatalf("the pair in place does not match: %v", err)
		}
		return string(c)
	}
	oldCert, oldKey, _ := issue()
	for _, tt := range []struct {
		name  string
		crash func(newCert, newKey []byte) // the state a crash left
		done  bool
	}{
		{"after the key was renamed", func(c, k []byte) { write(r.Key, k); write(r.Cert+".new", c) }, true},
		{"before any rename", func(c, k []byte) { write(r.Key+".new", k); write(r.Cert+".new", c) }, true},
		{"with the key staged only", func(c, k []byte) { write(r.Key+".new", k) }, false},
		{"nothing to do", func(c, k []byte) {}, false},
	} {
		write(r.Cert, oldCert)
		write(r.Key, oldKey)
		newCert, newKey, _ := issue()
		tt.crash(newCert, newKey)
		did, err := r.Recover()
		if err != nil || (did != "") != tt.done {
			t.Fatalf("%s: Recover = %q, %v", tt.name, did, err)
		}
		want := oldCert
		if tt.done {
			want = newCert
		}
		if inPlace() != string(want) {
			t.Fatalf("%s: the certificate in place is not the expected one", tt.name)
		}
		_ = os.Remove(r.Key + ".new")
		_ = os.Remove(r.Cert + ".new")
	}
	// A whole renewal through Commit leaves the new pair and no staging.
	newCert, newKey, cert := issue()
	if err := r.StageKey(newKey); err != nil {
		t.Fatal(err)
	}
	if err := r.Commit(cert); err != nil {
		t.Fatal(err)
	}
	if inPlace() != string(newCert) {
		t.Fatal("Commit did not put the new certificate in place")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("files left: %v", entries)
	}
}
