package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"ted/pki"
)

// BenchmarkQUICRawStream is the reference of the one-hop budget (≥ 0.7 ×
// raw quic-go single-stream throughput): plain quic-go, with its own
// sockets and default configuration, no TED protocol and no TED
// certificates, one stream over loopback to a peer that discards. The
// timed part ends when the peer has read everything.
func BenchmarkQUICRawStream(b *testing.B) {
	tlsServer, tlsClient := rawTLSConfigs(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	ln, err := quic.ListenAddr("127.0.0.1:0", tlsServer, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		n   int64
		err error
	}
	received := make(chan result, 1)
	go func() {
		conn, err := ln.Accept(ctx)
		if err != nil {
			received <- result{err: err}
			return
		}
		defer conn.CloseWithError(0, "")
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			received <- result{err: err}
			return
		}
		n, err := io.Copy(io.Discard, st)
		received <- result{n, err}
	}()

	conn, err := quic.DialAddr(ctx, ln.Addr().String(), tlsClient, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	_, _ = rand.Read(buf)

	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := st.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	res := <-received
	b.StopTimer()
	if res.err != nil || res.n != int64(b.N)*int64(len(buf)) {
		b.Fatalf("peer read %d bytes, %v; want %d", res.n, res.err, b.N*len(buf))
	}
}

// rawTLSConfigs returns a server and a client TLS config for plain
// quic-go: a throwaway self-signed certificate that the client does not
// check, and an ALPN of its own.
func rawTLSConfigs(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	const alpn = "raw-bench"
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{alpn},
	}
	client = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpn}}
	return server, client
}

// BenchmarkQUICSessionStream is BenchmarkQUICRawStream through this
// adapter: TED certificates, DefaultQUICConfig and sizedConn sockets. It
// shows what the adapter itself costs, apart from the protocol above it.
func BenchmarkQUICSessionStream(b *testing.B) {
	p := newTestPKI(b)
	load := func(name string, role pki.Role) *Credentials { return p.issue(b, name, role) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l, err := Listen("127.0.0.1:0", load("dist-1", pki.RoleDistributor), nil, QUICConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	type result struct {
		n   int64
		err error
	}
	received := make(chan result, 1)
	go func() {
		sess, err := l.Accept(ctx)
		if err != nil {
			received <- result{err: err}
			return
		}
		defer sess.Close(nil)
		st, err := sess.AcceptStream(ctx)
		if err != nil {
			received <- result{err: err}
			return
		}
		n, err := io.Copy(io.Discard, st)
		received <- result{n, err}
	}()

	sess, err := Dial(ctx, l.Addr().String(), load("web-01", pki.RoleSubscriber), pki.RoleDistributor, QUICConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close(nil)
	st, err := sess.OpenStream(ctx)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	_, _ = rand.Read(buf)

	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := st.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	res := <-received
	b.StopTimer()
	if res.err != nil || res.n != int64(b.N)*int64(len(buf)) {
		b.Fatalf("peer read %d bytes, %v; want %d", res.n, res.err, b.N*len(buf))
	}
}
