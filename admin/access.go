package admin

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"ted/pki"
)

// StatusTLS serves the status address over HTTPS to clients that present
// a certificate of role operator from the TED CA (docs/operations.md,
// "Who may look at the status endpoints"). The admin socket is not
// affected: its file mode is its access control.
type StatusTLS struct {
	// Certificate returns the server's certificate and key: the daemon's
	// own, in force now. It is called at every handshake, so a certificate
	// the daemon renews is presented from the next one on.
	Certificate func() (*tls.Certificate, error)
	// CAs are the CA certificates a client's certificate must chain to:
	// the daemon's tls.ca.
	CAs *x509.CertPool
	// Revoked, if set, returns why a client's certificate (already
	// verified) is revoked, or nil. It is asked at every request, so a
	// revocation takes effect on connections already open too.
	Revoked func(cert *x509.Certificate) error
	// MetricsOpen serves GET /metrics to any client, with or without a
	// certificate (a Prometheus scraper): the handshake then asks for a
	// certificate without requiring one, and every other path still
	// refuses a request without a valid operator certificate (403).
	MetricsOpen bool
}

func (t *StatusTLS) check() error {
	switch {
	case t.Certificate == nil:
		return errors.New("admin: StatusTLS.Certificate: nil function")
	case t.CAs == nil:
		return errors.New("admin: StatusTLS.CAs: no CA pool to verify clients against")
	}
	return nil
}

// ErrNotLoopback refuses plain HTTP on a status address that is not a
// loopback address.
var ErrNotLoopback = errors.New("not a loopback address")

// IsLoopback reports whether the TCP address addr (HOST:PORT) listens on
// loopback only: a 127.0.0.0/8 address, ::1 or "localhost". An empty
// host (":7401", every address), 0.0.0.0, ::, any other address and any
// other host name are not. An addr that is not HOST:PORT is not either.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return ip.WithZone("").Unmap().IsLoopback()
}

// serverConfig is the status listener's TLS config. The client's
// certificate is asked for (required unless MetricsOpen) but checked per
// request (authorize), so that a refusal is an HTTP answer that says why,
// rather than a TLS alert.
func (t *StatusTLS) serverConfig() *tls.Config {
	auth := tls.RequireAnyClientCert
	if t.MetricsOpen {
		auth = tls.RequestClientCert
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return t.Certificate()
		},
		ClientAuth: auth,
		// Not used to verify (authorize does): it tells clients which
		// certificate to present.
		ClientCAs:  t.CAs,
		NextProtos: []string{"http/1.1"},
	}
}

// metricsPath is the path MetricsOpen exempts.
const metricsPath = "/metrics"

// authorize returns why r may not be served, or nil: its client
// certificate must chain to the CA, carry role operator, be valid now and
// not be revoked.
func (t *StatusTLS) authorize(r *http.Request) error {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return fmt.Errorf("no client certificate: the status endpoints need a certificate of role %s from this node's CA (ted pki issue --role %s)",
			pki.RoleOperator, pki.RoleOperator)
	}
	cert := r.TLS.PeerCertificates[0]
	if err := pki.VerifyRole(cert, t.CAs, pki.RoleOperator); err != nil {
		return err
	}
	if t.Revoked != nil {
		if err := t.Revoked(cert); err != nil {
			return err
		}
	}
	return nil
}

// requireOperator serves h to requests that authorize admits (and to any
// request for /metrics when MetricsOpen), and refuses the others with 403
// and the reason.
func (s *Server) requireOperator(t *StatusTLS, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t.MetricsOpen && r.URL.Path == metricsPath {
			h.ServeHTTP(w, r)
			return
		}
		if err := t.authorize(r); err != nil {
			attrs := []any{"addr", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "err", err}
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
				s.log.Warn("status request refused", attrs...)
			} else {
				s.log.Debug("status request refused", attrs...)
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusForbidden)
			_, _ = fmt.Fprintf(w, "forbidden: %v\n", err)
			return
		}
		h.ServeHTTP(w, r)
	})
}
