package enroll

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ted/pki"
	"ted/transport"
)

// Config is what a Handler needs.
type Config struct {
	// Cred is this distributor's credentials: what it dials its parent
	// with to pass a request on, and whose name it gives in messages.
	Cred *transport.Credentials
	// CACerts are the CA certificates this distributor trusts (its
	// tls.ca), sent to a new node, which pins one of them by fingerprint.
	CACerts []*x509.Certificate
	// CA, if set, signs here (enroll.ca_dir); nil passes every request on
	// to the first parent that answers.
	CA *pki.CA
	// Parents says the parents to pass requests on to, in order of
	// preference, at the time of asking.
	Parents func() []string
	// QUIC configures the dial to a parent.
	QUIC transport.QUICConfig
	Log  *slog.Logger
	// Now is the clock tokens are checked against; nil is time.Now.
	Now func() time.Time
}

// Handler serves enrollment and renewal requests (see the package doc).
// Its methods are safe for concurrent use.
type Handler struct {
	cfg Config
	// caMu: one signature at a time here; the CA directory's lock
	// (pki.CA.Locked) does the same across processes.
	caMu sync.Mutex
	// The CA directory's revocation list, as last parsed, and the file's
	// state then (see revocations).
	crlMu   sync.Mutex
	crl     *pki.Revocations
	crlFile fs.FileInfo
	// firstRequest is firstRequestTimeout; tests shorten it.
	firstRequest time.Duration
	// served counts requests by operation and outcome.
	served *prometheus.CounterVec
}

// Limits on one enrollment connection: a client that is slower than this
// is cut off, so a slow (or malicious) client cannot hold a slot.
const (
	// requestTimeout bounds one request, from its stream's opening to its
	// answer, the time a parent takes to answer included.
	requestTimeout = 30 * time.Second
	// firstRequestTimeout bounds the wait for the first request, from the
	// handshake's end until it is read: a connection that says nothing
	// gives its slot back soon.
	firstRequestTimeout = 10 * time.Second
	// maxRequests is how many requests one connection may make: the CA,
	// then the enrollment or renewal, and a spare.
	maxRequests = 3
)

// New makes a handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Cred == nil {
		return nil, errors.New("enroll: no credentials")
	}
	if len(cfg.CACerts) == 0 && cfg.CA == nil {
		return nil, errors.New("enroll: no CA certificate to send")
	}
	if cfg.CA != nil && !containsCert(cfg.CACerts, cfg.CA.Cert) {
		cfg.CACerts = append([]*x509.Certificate{cfg.CA.Cert}, cfg.CACerts...)
	}
	if cfg.Parents == nil {
		cfg.Parents = func() []string { return nil }
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Handler{cfg: cfg, firstRequest: firstRequestTimeout, served: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ted_enroll_requests_total",
		Help: "Enrollment and renewal requests served here (signed, passed on to a parent, or refused), by operation and outcome.",
	}, []string{"op", "outcome"})}, nil
}

func containsCert(certs []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range certs {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

// Collector is the handler's metrics, for the daemon's registry.
func (h *Handler) Collector() prometheus.Collector { return h.served }

// Signs reports whether this handler signs itself (enroll.ca_dir).
func (h *Handler) Signs() bool { return h.cfg.CA != nil }

func (h *Handler) name() string { return h.cfg.Cred.Self().Name }

// Serve answers the requests of one enrollment connection, each on its
// own stream, until the peer closes it, ctx ends or maxRequests are done.
// It is the listener's enrollment handler (transport.Listener.HandleEnroll).
func (h *Handler) Serve(ctx context.Context, conn *transport.EnrollConn) {
	ctx, cancel := context.WithTimeout(ctx, maxRequests*requestTimeout)
	defer cancel()
	for i := range maxRequests {
		first := i == 0
		st, err := h.accept(ctx, conn, first)
		if err != nil {
			if first && ctx.Err() == nil {
				// Silent: closed at once, not after the linger that lets a
				// last answer arrive.
				_ = conn.Close(fmt.Errorf("%s: no request within %v", h.name(), h.firstRequest))
			}
			return // the peer is done, or too slow
		}
		h.serveStream(ctx, conn, st, first)
	}
}

// accept waits for the connection's next request stream; the first within
// firstRequestTimeout.
func (h *Handler) accept(ctx context.Context, conn *transport.EnrollConn, first bool) (transport.EnrollStream, error) {
	if first {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.firstRequest)
		defer cancel()
	}
	return conn.AcceptStream(ctx)
}

func (h *Handler) serveStream(ctx context.Context, conn *transport.EnrollConn, st transport.EnrollStream, first bool) {
	defer st.Close()
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	// The first request is read within firstRequestTimeout of the
	// handshake's end, whoever sends it: a node sends it at once.
	readBy := deadline
	if first {
		readBy = time.Now().Add(h.firstRequest)
	}
	if err := st.SetDeadline(readBy); err != nil {
		return
	}
	var req request
	if err := readMessage(st, &req); err != nil {
		h.cfg.Log.Warn("enrollment: unreadable request", "addr", conn.RemoteAddr(), "err", err)
		h.served.WithLabelValues("unknown", kindRefused).Inc()
		_ = st.SetDeadline(deadline)
		_ = writeMessage(st, refuse(kindRefused, "%s: unreadable request: %v", h.name(), err))
		return
	}
	if err := st.SetDeadline(deadline); err != nil {
		return
	}
	resp := h.handle(ctx, &req, conn.RemoteAddr())
	if err := writeMessage(st, resp); err != nil {
		h.cfg.Log.Warn("enrollment: cannot send the answer", "addr", conn.RemoteAddr(), "op", req.Op, "err", err)
		return
	}
	_ = st.CloseWrite()
}

// handle answers one request from addr (a node, or a distributor passing
// it on).
func (h *Handler) handle(ctx context.Context, req *request, addr string) *response {
	op := req.Op
	var resp *response
	switch op {
	case opCA:
		resp = &response{}
		for _, c := range h.cfg.CACerts {
			resp.CA = append(resp.CA, c.Raw)
		}
	case opEnroll, opRenew:
		if h.cfg.CA != nil {
			resp = h.sign(req, addr)
		} else {
			resp = h.forward(ctx, req, addr)
		}
	default:
		op = "unknown"
		resp = refuse(kindRefused, "%s: unknown request %q (is the node a newer TED?)", h.name(), req.Op)
	}
	outcome := resp.Kind
	switch {
	case outcome != "":
	case op == opCA:
		outcome = "ok"
	case h.cfg.CA != nil:
		outcome = "signed"
	default:
		outcome = "passed_on"
	}
	h.served.WithLabelValues(op, outcome).Inc()
	return resp
}

// Sign answers a request here, with the CA: what a distributor with
// enroll.ca_dir does for its own renewal. What can be checked without the
// CA's records (the request's signatures, the token, the chain) is
// checked first, outside the CA's lock, so that bogus requests cost no
// file reads and hold up no one.
func (h *Handler) sign(req *request, addr string) *response {
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return refuse(kindRefused, "%s: the certificate request is malformed: %v", h.name(), err)
	}
	if err := csr.CheckSignature(); err != nil {
		return refuse(kindRefused, "%s: the certificate request's signature does not verify: %v", h.name(), err)
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return refuse(kindRefused, "%s: the certificate request's key: %v", h.name(), err)
	}
	name := csr.Subject.CommonName
	if err := pki.ValidateName(name); err != nil {
		return refuse(kindName, "%s: %v", h.name(), err)
	}
	if req.Op == opRenew {
		return h.renew(req, csr, addr)
	}
	return h.enroll(req, csr, addr)
}

// locked runs fn holding the CA: the handler's mutex, for its own
// goroutines, and the CA directory's lock, for other processes (another
// distributor with the same enroll.ca_dir, ted pki revoke). fn reads the
// CA's records, decides, signs and records, so that nothing changes the
// records between its check and its write.
func (h *Handler) locked(fn func() error) error {
	h.caMu.Lock()
	defer h.caMu.Unlock()
	return h.cfg.CA.Locked(fn)
}

// unavailable answers a request the signer could not serve for a fault of
// its own (its records cannot be read or written), and logs it.
func (h *Handler) unavailable(msg string, err error, args ...any) *response {
	h.cfg.Log.Error(msg, append(args, "err", err)...)
	return refuse(kindUnavailable, "%s: %s: %v", h.name(), msg, err)
}

func (h *Handler) enroll(req *request, csr *x509.CertificateRequest, addr string) *response {
	ca := h.cfg.CA
	name := csr.Subject.CommonName
	tok, err := pki.VerifyToken(req.Token, []*x509.Certificate{ca.Cert}, h.cfg.Now())
	if err != nil {
		h.cfg.Log.Warn("enrollment refused", "name", name, "token", tok.ID, "addr", addr, "err", err)
		return refuse(tokenKind(err), "%s: %v", h.name(), err)
	}
	if tok.Name != "" && tok.Name != name {
		h.cfg.Log.Warn("enrollment refused: name not allowed by the token", "name", name, "token", tok.ID, "allowed", tok.Name, "addr", addr)
		return refuse(kindName, "%s: join token %s enrolls only %q, not %q", h.name(), tok.ID, tok.Name, name)
	}
	// A token made for this name may replace its certificate (a server
	// rebuilt); one that names no node may not take over a name in use,
	// or any holder of such a token could become any node.
	bound := tok.Name == name
	tok.Name = name
	var resp *response
	var cert *x509.Certificate
	err = h.locked(func() error {
		if !bound {
			if resp = h.nameInUse(name, tok, addr); resp != nil {
				return nil
			}
		}
		if err := ca.ConsumeToken(tok); err != nil {
			h.cfg.Log.Warn("enrollment refused", "name", name, "token", tok.ID, "addr", addr, "err", err)
			kind := tokenKind(err)
			if kind == kindTokenInvalid && !errors.Is(err, pki.ErrTokenInvalid) {
				kind = kindUnavailable // the CA's record cannot be read or written
			}
			resp = refuse(kind, "%s: %v", h.name(), err)
			return nil
		}
		c, err := ca.Sign(pki.Spec{Name: name, Role: tok.Role, Groups: tok.Groups}, csr.PublicKey)
		if err != nil {
			resp = h.unavailable("cannot sign after the join token was used", err, "name", name, "token", tok.ID, "addr", addr)
			return nil
		}
		// A certificate not in the index could not be revoked by name, nor
		// be seen by the next enrollment of its name: not handed out.
		if err := ca.Record(c, "enroll"); err != nil {
			resp = h.unavailable("cannot record the certificate in the CA's index, so it is not handed out (the join token is spent: make a new one)", err,
				"name", name, "token", tok.ID, "serial", pki.SerialHex(c), "addr", addr)
			return nil
		}
		cert = c
		return nil
	})
	if err != nil {
		return h.unavailable("cannot lock the CA directory", err, "name", name, "token", tok.ID, "addr", addr)
	}
	if resp != nil {
		return resp
	}
	h.cfg.Log.Info(fmt.Sprintf("enrolled %s (%s, groups %s) with token %s from %s", name, tok.Role, groupList(tok.Groups), tok.ID, addr),
		"name", name, "role", tok.Role, "groups", tok.Groups, "token", tok.ID, "addr", addr, "serial", pki.SerialHex(cert), "expires", cert.NotAfter.UTC())
	return &response{Cert: cert.Raw}
}

// nameInUse refuses, with what to do, the enrollment of name by a token
// that does not name it when the CA's index holds a certificate of that
// name still in force (not expired, revoked by neither the CA's list nor
// the one this distributor holds). Nil lets it go on. Called locked.
func (h *Handler) nameInUse(name string, tok pki.Token, addr string) *response {
	ca := h.cfg.CA
	issued, err := ca.IssuedCertificates()
	if err != nil {
		return h.unavailable("cannot read the CA's index", err, "name", name, "token", tok.ID, "addr", addr)
	}
	crl, err := h.revocations()
	if err != nil {
		return h.unavailable("cannot read the CA's revocation list", err, "name", name, "token", tok.ID, "addr", addr)
	}
	live := h.cfg.Cred.Revocations()
	now := time.Now()
	for _, is := range issued {
		if is.Name != name || !is.Current(now, crl) || live.RevokedSerial(is.Serial) {
			continue
		}
		h.cfg.Log.Warn("enrollment refused: the name has a certificate in force", "name", name, "serial", is.Serial, "token", tok.ID, "addr", addr)
		return refuse(kindName, "%s: %q already has a certificate in force (serial %s, expires %s, in %s), and join token %s does not name it: "+
			"revoke the old certificate first (ted pki revoke --dir %s %s), or enroll with a token made for the name (ted pki token --name %s)",
			h.name(), name, is.Serial, is.NotAfter.UTC().Format(time.RFC3339), filepath.Join(ca.Dir, "issued.jsonl"), tok.ID, ca.Dir, name, name)
	}
	return nil
}

func groupList(groups []string) string {
	if len(groups) == 0 {
		return "none"
	}
	return strings.Join(groups, ",")
}

// tokenKind is the refusal kind of a pki token error.
func tokenKind(err error) string {
	switch {
	case errors.Is(err, pki.ErrTokenExpired):
		return kindTokenExpired
	case errors.Is(err, pki.ErrTokenUsed):
		return kindTokenUsed
	}
	return kindTokenInvalid
}

func (h *Handler) renew(req *request, csr *x509.CertificateRequest, addr string) *response {
	ca := h.cfg.CA
	name := csr.Subject.CommonName
	old, err := x509.ParseCertificate(req.Cert)
	if err != nil {
		return refuse(kindRefused, "%s: renewal of %s: the current certificate is malformed: %v", h.name(), name, err)
	}
	oldSerial := pki.SerialHex(old)
	refused := func(format string, args ...any) *response {
		msg := fmt.Sprintf(format, args...)
		h.cfg.Log.Warn("renewal refused", "name", old.Subject.CommonName, "serial", oldSerial, "addr", addr, "err", msg)
		return refuse(kindRefused, "%s: renewal of %s (serial %s) refused: %s", h.name(), old.Subject.CommonName, oldSerial, msg)
	}
	// The cheap checks first: a signature each.
	if name != old.Subject.CommonName {
		return refused("the request is for %q, the certificate for %q", name, old.Subject.CommonName)
	}
	if err := verifyProof(old, req.CSR, req.Proof); err != nil {
		return refused("%v", err)
	}
	if pub, ok := old.PublicKey.(interface{ Equal(any) bool }); ok && pub.Equal(csr.PublicKey) {
		return refused("the request reuses the current key; a renewal needs a new one")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	// Verify checks the validity period too: an expired certificate can no
	// longer renew itself, its node needs a join token.
	if _, err := old.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return refused("%v (an expired certificate cannot renew itself: enroll the node again with a join token)", err)
	}
	// The list this distributor holds may be newer than the CA
	// directory's (a revocation made on another copy of the CA directory
	// and passed down the tree, or a tls.crl that is not ca_dir's).
	if live := h.cfg.Cred.Revocations(); live.Revoked(old) {
		return refused("the certificate is revoked (revocation list number %s)", live.Number)
	}
	role, err := pki.RoleOf(old)
	if err != nil {
		return refused("%v", err)
	}
	if !role.IsNode() {
		// An operator certificate is a person's or a tool's: it has no
		// parent to renew through, and a node must not mint one.
		return refused("role %s is not a node's: issue a new certificate with ted pki issue --role %s", role, role)
	}
	groups, err := pki.GroupsOf(old)
	if err != nil {
		return refused("%v", err)
	}
	hosts := append([]string(nil), old.DNSNames...)
	for _, ip := range old.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	// The same lifetime as the certificate it replaces: one issued for a
	// short life (a test, a temporary server) stays short. Sign backdates
	// NotBefore by ClockSkew, which is not part of it: counted in, every
	// renewal would add it again.
	lifetime := old.NotAfter.Sub(old.NotBefore)
	if lifetime > pki.ClockSkew {
		lifetime -= pki.ClockSkew
	}
	var resp *response
	var cert *x509.Certificate
	err = h.locked(func() error {
		// Under the lock: a revocation by name (ted pki revoke) either
		// comes before, and is seen here, or after, and finds the renewed
		// certificate in the index.
		crl, err := h.revocations()
		if err != nil {
			resp = h.unavailable("cannot read the CA's revocation list, so renews nothing until it is fixed", err, "name", name, "addr", addr)
			return nil
		}
		if crl.Revoked(old) {
			resp = refused("the certificate is revoked")
			return nil
		}
		issued, err := ca.IssuedCertificates()
		if err != nil {
			resp = h.unavailable("cannot read the CA's index", err, "name", name, "addr", addr)
			return nil
		}
		for _, is := range issued {
			if is.Renews == oldSerial {
				h.cfg.Log.Warn("renewal of a certificate already renewed: its key may be in other hands", "name", name, "serial", oldSerial,
					"renewed_by", is.Serial, "addr", addr)
				resp = refused("it was already renewed, by serial %s on %s, and a certificate renews once (a copy of its key must not get one of its own): "+
					"if this node lost the renewed certificate, enroll it again with a token made for its name (ted pki token --name %s)",
					is.Serial, is.IssuedAt.UTC().Format(time.RFC3339), name)
				return nil
			}
		}
		c, err := ca.Sign(pki.Spec{Name: name, Role: role, Groups: groups, Hosts: hosts, Validity: lifetime}, csr.PublicKey)
		if err != nil {
			resp = h.unavailable("cannot sign", err, "name", name, "addr", addr)
			return nil
		}
		if err := ca.RecordRenewal(c, oldSerial); err != nil {
			resp = h.unavailable("cannot record the certificate in the CA's index, so it is not handed out", err,
				"name", name, "serial", pki.SerialHex(c), "addr", addr)
			return nil
		}
		cert = c
		return nil
	})
	if err != nil {
		return h.unavailable("cannot lock the CA directory", err, "name", name, "addr", addr)
	}
	if resp != nil {
		return resp
	}
	h.cfg.Log.Info(fmt.Sprintf("renewed %s (%s) from %s", name, role, addr), "name", name, "role", role, "groups", groups, "addr", addr,
		"old_serial", oldSerial, "old_expires", old.NotAfter.UTC(), "serial", pki.SerialHex(cert), "expires", cert.NotAfter.UTC())
	return &response{Cert: cert.Raw}
}

// revocations is the CA directory's revocation list (nil if there is
// none), parsed again only when the file changes: parsing and checking the
// signature of a long list for every request would make each one dear.
func (h *Handler) revocations() (*pki.Revocations, error) {
	path := h.cfg.CA.CRLPath()
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	h.crlMu.Lock()
	defer h.crlMu.Unlock()
	if h.crlFile != nil && os.SameFile(fi, h.crlFile) && fi.ModTime().Equal(h.crlFile.ModTime()) && fi.Size() == h.crlFile.Size() {
		return h.crl, nil
	}
	crl, err := pki.LoadRevocations(path, []*x509.Certificate{h.cfg.CA.Cert})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	h.crl, h.crlFile = crl, fi
	return crl, nil
}

// forward passes a request on to the first parent that answers, and
// relays its answer. A parent that cannot be reached is skipped; one that
// answers, even with a refusal, is the answer, since a token it consumed
// must not be tried elsewhere.
func (h *Handler) forward(ctx context.Context, req *request, addr string) *response {
	parents := h.cfg.Parents()
	if len(parents) == 0 {
		return refuse(kindUnavailable, "%s neither signs (no enroll.ca_dir) nor has a parent to pass the request on to", h.name())
	}
	var errs []string
	for _, p := range parents {
		resp, err := h.ask(ctx, p, req)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if resp.Error != "" {
			h.cfg.Log.Info("enrollment request passed on, and refused", "op", req.Op, "addr", addr, "parent", p, "err", resp.Error)
		} else {
			h.cfg.Log.Info("enrollment request passed on", "op", req.Op, "addr", addr, "parent", p)
		}
		return resp
	}
	h.cfg.Log.Warn("enrollment request not passed on: no parent answered", "op", req.Op, "addr", addr, "errs", errs)
	return refuse(kindUnavailable, "%s cannot reach a parent to pass the request on to: %s", h.name(), strings.Join(errs, "; "))
}

// ask sends req to the distributor at addr over a connection of its own,
// with this node's credentials.
func (h *Handler) ask(ctx context.Context, addr string, req *request) (*response, error) {
	conn, err := transport.DialEnroll(ctx, addr, h.cfg.Cred, h.cfg.QUIC)
	if err != nil {
		return nil, err
	}
	defer conn.Close(nil)
	return exchange(ctx, conn, req)
}

// exchange sends one request on a stream of its own and reads the answer.
func exchange(ctx context.Context, conn *transport.EnrollConn, req *request) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	st, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	deadline, _ := ctx.Deadline()
	if err := st.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if err := writeMessage(st, req); err != nil {
		return nil, fmt.Errorf("send request to %s: %w", conn.RemoteAddr(), err)
	}
	// The FIN may find the stream already stopped by a peer that has
	// read the request and answered: the answer says how it went.
	_ = st.CloseWrite()
	var resp response
	if err := readMessage(st, &resp); err != nil {
		return nil, fmt.Errorf("read answer from %s: %w", conn.RemoteAddr(), err)
	}
	return &resp, nil
}
