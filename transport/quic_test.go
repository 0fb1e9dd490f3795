package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"ted/pki"
)

// testPKI is a CA in a temporary directory that issues credentials.
type testPKI struct{ dir string }

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := pki.InitCA(dir, false); err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	return &testPKI{dir: dir}
}

// issue issues a certificate for name and role and loads it as
// credentials trusting this CA.
func (p *testPKI) issue(t testing.TB, name string, role pki.Role) *Credentials {
	t.Helper()
	files, err := pki.Issue(p.dir, name, role, []string{"127.0.0.1"}, false)
	if err != nil {
		t.Fatalf("Issue %s: %v", name, err)
	}
	cred, err := LoadCredentials(p.caFile(), files.Cert, files.Key, role)
	if err != nil {
		t.Fatalf("LoadCredentials %s: %v", name, err)
	}
	return cred
}

func (p *testPKI) caFile() string { return filepath.Join(p.dir, "ca.crt") }

// logRecorder is a slog handler that hands every record to the test.
type logRecorder struct{ records chan slog.Record }

func newLogRecorder() *logRecorder { return &logRecorder{records: make(chan slog.Record, 256)} }

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	select {
	case r.records <- rec.Clone():
	default: // a test that does not read its log must not block the adapter
	}
	return nil
}

func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

func (r *logRecorder) logger() *slog.Logger { return slog.New(r) }

// waitWarning waits for a warning whose err attribute contains every one of
// wants, and returns its attributes.
func (r *logRecorder) waitWarning(t *testing.T, wants ...string) map[string]string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case rec := <-r.records:
			attrs := map[string]string{}
			rec.Attrs(func(a slog.Attr) bool {
				attrs[a.Key] = a.Value.String()
				return true
			})
			if rec.Level == slog.LevelWarn && containsAll(attrs["err"], wants...) {
				return attrs
			}
		case <-timeout:
			t.Fatalf("no warning with err containing %q", wants)
			return nil
		}
	}
}

func containsAll(s string, wants ...string) bool {
	for _, w := range wants {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

// testListen starts a listener on a free loopback port, closed at the end
// of the test.
func testListen(t *testing.T, cred *Credentials, accept func(Identity) error, log *slog.Logger) *Listener {
	t.Helper()
	l, err := Listen("127.0.0.1:0", cred, accept, QUICConfig{Logger: log})
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Listener.Close: %v", err)
		}
	})
	return l
}

// acceptResult is the outcome of one Accept.
type acceptResult struct {
	sess Session
	err  error
}

// acceptAsync runs one Accept in the background.
func acceptAsync(ctx context.Context, l *Listener) <-chan acceptResult {
	ch := make(chan acceptResult, 1)
	go func() {
		sess, err := l.Accept(ctx)
		ch <- acceptResult{sess, err}
	}()
	return ch
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect dials l as client and returns both ends of the session.
func connect(t *testing.T, l *Listener, client *Credentials, want pki.Role) (dialled, accepted Session) {
	t.Helper()
	ctx := testContext(t)
	acc := acceptAsync(ctx, l)
	dialled, err := Dial(ctx, l.Addr().String(), client, want, QUICConfig{})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = dialled.Close(nil) })
	res := <-acc
	if res.err != nil {
		t.Fatalf("Accept: %v", res.err)
	}
	t.Cleanup(func() { _ = res.sess.Close(nil) })
	return dialled, res.sess
}

func TestQUICSessionIdentities(t *testing.T) {
	p := newTestPKI(t)
	server := p.issue(t, "dist-1", pki.RoleDistributor)
	client := p.issue(t, "web-01", pki.RoleSubscriber)
	if got := client.Self(); got.Name != "web-01" || got.Role != pki.RoleSubscriber || got.Serial == "" || got.NotAfter.IsZero() {
		t.Errorf("Self = %v", got)
	}
	var seen Identity
	l := testListen(t, server, func(id Identity) error { seen = id; return nil }, nil)
	dialled, accepted := connect(t, l, client, pki.RoleDistributor)

	if want := server.Self(); !reflect.DeepEqual(dialled.Peer(), want) || want.Name != "dist-1" {
		t.Errorf("dialler sees %v, want %v", dialled.Peer(), want)
	}
	if want := client.Self(); !reflect.DeepEqual(accepted.Peer(), want) || !reflect.DeepEqual(seen, want) {
		t.Errorf("listener sees %v, accept saw %v, want %v", accepted.Peer(), seen, want)
	}
	if got, want := dialled.RemoteAddr(), l.Addr().String(); got != want {
		t.Errorf("dialler RemoteAddr = %s, want %s", got, want)
	}
	if host, _, err := net.SplitHostPort(accepted.RemoteAddr()); err != nil || host != "127.0.0.1" {
		t.Errorf("listener RemoteAddr = %s", accepted.RemoteAddr())
	}
}

// roundTrip has opener open a stream, send a request and read the reply
// that acceptor sends back.
func roundTrip(t *testing.T, opener, acceptor Session) {
	t.Helper()
	ctx := testContext(t)
	done := make(chan error, 1)
	go func() {
		st, err := acceptor.AcceptStream(ctx)
		if err != nil {
			done <- err
			return
		}
		defer st.Close()
		req := make([]byte, len("ping"))
		if _, err := io.ReadFull(st, req); err != nil {
			done <- fmt.Errorf("read request: %w", err)
			return
		}
		_, err = st.Write(append(req, " pong"...))
		done <- err
	}()
	st, err := opener.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	defer st.Close()
	if _, err := st.Write([]byte("ping")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	reply, err := io.ReadAll(st)
	if err != nil || string(reply) != "ping pong" {
		t.Fatalf("reply %q, %v", reply, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("acceptor: %v", err)
	}
}

func TestQUICStreamsBothWays(t *testing.T) {
	p := newTestPKI(t)
	l := testListen(t, p.issue(t, "dist-1", pki.RoleDistributor), nil, nil)
	dialled, accepted := connect(t, l, p.issue(t, "web-01", pki.RoleSubscriber), pki.RoleDistributor)
	t.Run("dialler opens", func(t *testing.T) { roundTrip(t, dialled, accepted) })
	t.Run("listener opens", func(t *testing.T) { roundTrip(t, accepted, dialled) })
}

// streamData is the deterministic content of one direction of one stream.
func streamData(seed byte, n int) []byte {
	buf := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(buf)
	return buf
}

func TestQUICConcurrentStreams(t *testing.T) {
	const streams, size = 8, 4 << 20
	p := newTestPKI(t)
	l := testListen(t, p.issue(t, "dist-1", pki.RoleDistributor), nil, nil)
	dialled, accepted := connect(t, l, p.issue(t, "web-01", pki.RoleSubscriber), pki.RoleDistributor)
	ctx := testContext(t)

	// The listener reads each stream's upload in full, checks it, and sends
	// a download back; the first byte names the stream.
	var serveWG sync.WaitGroup
	serveErrs := make(chan error, streams)
	serveWG.Go(func() {
		for range streams {
			st, err := accepted.AcceptStream(ctx)
			if err != nil {
				serveErrs <- err
				return
			}
			serveWG.Go(func() {
				defer st.Close()
				up := make([]byte, size)
				if _, err := io.ReadFull(st, up); err != nil {
					serveErrs <- fmt.Errorf("read upload: %w", err)
					return
				}
				i := up[0]
				want := streamData(i, size)
				want[0] = i
				if !bytes.Equal(up, want) {
					serveErrs <- fmt.Errorf("stream %d: upload corrupted", i)
					return
				}
				down := streamData(100+i, size)
				if _, err := st.Write(down); err != nil {
					serveErrs <- fmt.Errorf("stream %d: write download: %w", i, err)
				}
			})
		}
	})

	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range byte(streams) {
		wg.Go(func() {
			st, err := dialled.OpenStream(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer st.Close()
			up := streamData(i, size)
			up[0] = i
			if _, err := st.Write(up); err != nil {
				errs <- fmt.Errorf("stream %d: write upload: %w", i, err)
				return
			}
			down, err := io.ReadAll(st)
			if err != nil {
				errs <- fmt.Errorf("stream %d: read download: %w", i, err)
				return
			}
			if sha256.Sum256(down) != sha256.Sum256(streamData(100+i, size)) {
				errs <- fmt.Errorf("stream %d: download of %d bytes corrupted", i, len(down))
			}
		})
	}
	wg.Wait()
	serveWG.Wait()
	close(errs)
	close(serveErrs)
	for err := range errs {
		t.Error(err)
	}
	for err := range serveErrs {
		t.Error(err)
	}
}

func TestQUICForeignCA(t *testing.T) {
	ours, theirs := newTestPKI(t), newTestPKI(t)

	t.Run("client", func(t *testing.T) {
		rec := newLogRecorder()
		l := testListen(t, ours.issue(t, "dist-1", pki.RoleDistributor), nil, rec.logger())
		// The intruder trusts our CA, so that it gets as far as showing
		// its own certificate.
		intruder := theirs.issue(t, "intruder", pki.RoleSubscriber)
		pool, err := pki.LoadCertPool(ours.caFile())
		if err != nil {
			t.Fatal(err)
		}
		intruder.pool = pool
		_, err = Dial(testContext(t), l.Addr().String(), intruder, pki.RoleDistributor, QUICConfig{})
		if err == nil || !containsAll(err.Error(), l.Addr().String(), "dist-1", "refused our certificate") {
			t.Fatalf("Dial with a foreign certificate: %v", err)
		}
		t.Logf("dialler: %v", err)
		attrs := rec.waitWarning(t, `certificate "intruder" not signed by our CA`, "127.0.0.1:")
		t.Logf("listener: %v", attrs)
		if !strings.HasPrefix(attrs["addr"], "127.0.0.1:") {
			t.Errorf("warning attrs %v, want addr", attrs)
		}
	})

	t.Run("server", func(t *testing.T) {
		rec := newLogRecorder()
		l := testListen(t, theirs.issue(t, "rogue", pki.RoleDistributor), nil, rec.logger())
		addr := l.Addr().String()
		_, err := Dial(testContext(t), addr, ours.issue(t, "web-01", pki.RoleSubscriber), pki.RoleDistributor, QUICConfig{})
		if err == nil || !containsAll(err.Error(), "peer "+addr, `certificate "rogue" not signed by our CA`) {
			t.Fatalf("Dial to a foreign server: %v", err)
		}
		t.Logf("dialler: %v", err)
		// The dialler refused first; the listener still says so.
		attrs := rec.waitWarning(t, "peer refused our certificate", "bad certificate")
		t.Logf("listener: %v", attrs)
	})

	t.Run("no client certificate", func(t *testing.T) {
		rec := newLogRecorder()
		l := testListen(t, ours.issue(t, "dist-2", pki.RoleDistributor), nil, rec.logger())
		_, tlsClient := rawTLSConfigs(t)
		tlsClient.NextProtos = []string{ALPN}
		// TLS 1.3 lets the client finish before the server has checked it,
		// so Dial may succeed; the connection is closed right after.
		if conn, err := quic.DialAddr(testContext(t), l.Addr().String(), tlsClient, nil); err == nil {
			<-conn.Context().Done()
		}
		attrs := rec.waitWarning(t, "certificate")
		t.Logf("listener: %v", attrs)
	})
}

func TestQUICDialWrongRole(t *testing.T) {
	p := newTestPKI(t)
	l := testListen(t, p.issue(t, "web-02", pki.RoleSubscriber), nil, nil)
	addr := l.Addr().String()
	_, err := Dial(testContext(t), addr, p.issue(t, "web-01", pki.RoleSubscriber), pki.RoleDistributor, QUICConfig{})
	if err == nil || !containsAll(err.Error(), "web-02", addr, "role subscriber", "want distributor") {
		t.Fatalf("Dial to a subscriber wanting a distributor: %v", err)
	}
	t.Logf("dialler: %v", err)
	if !errors.Is(err, pki.ErrWrongRole) {
		t.Errorf("error %v does not wrap pki.ErrWrongRole", err)
	}
}

func TestQUICAcceptRefuses(t *testing.T) {
	p := newTestPKI(t)
	rec := newLogRecorder()
	l := testListen(t, p.issue(t, "dist-1", pki.RoleDistributor), func(id Identity) error {
		if id.Role == pki.RolePublisher {
			return fmt.Errorf("publisher %s may not connect to this distributor", id.Name)
		}
		return nil
	}, rec.logger())
	ctx := testContext(t)
	acc := acceptAsync(ctx, l)

	_, err := Dial(ctx, l.Addr().String(), p.issue(t, "pub-1", pki.RolePublisher), pki.RoleDistributor, QUICConfig{})
	if err == nil || !containsAll(err.Error(), "dist-1", "refused", "publisher pub-1 may not connect to this distributor") {
		t.Fatalf("Dial refused by accept: %v", err)
	}
	t.Logf("dialler: %v", err)
	attrs := rec.waitWarning(t, "publisher pub-1 may not connect")
	t.Logf("listener: %v", attrs)
	if attrs["peer"] != "pub-1" || !strings.HasPrefix(attrs["addr"], "127.0.0.1:") {
		t.Errorf("warning attrs %v, want peer and addr", attrs)
	}

	// The same Accept call goes on to the next peer.
	sess, err := Dial(ctx, l.Addr().String(), p.issue(t, "web-01", pki.RoleSubscriber), pki.RoleDistributor, QUICConfig{})
	if err != nil {
		t.Fatalf("Dial after a refusal: %v", err)
	}
	defer sess.Close(nil)
	res := <-acc
	if res.err != nil {
		t.Fatalf("Accept: %v", res.err)
	}
	defer res.sess.Close(nil)
	if res.sess.Peer().Name != "web-01" {
		t.Errorf("Accept returned %v, want web-01", res.sess.Peer())
	}
}

func TestQUICVersionMismatch(t *testing.T) {
	p := newTestPKI(t)
	rec := newLogRecorder()
	l := testListen(t, p.issue(t, "dist-1", pki.RoleDistributor), nil, rec.logger())
	addr := l.Addr().String()
	_, err := dial(testContext(t), addr, p.issue(t, "web-01", pki.RoleSubscriber), pki.RoleDistributor, QUICConfig{}, "ted/2")
	if err == nil || !containsAll(err.Error(), addr, "does not speak ted/2") {
		t.Fatalf("Dial speaking ted/2: %v", err)
	}
	t.Logf("dialler: %v", err)
	attrs := rec.waitWarning(t, "speaks ted/2, this node speaks ted/1.3, ted/1.2, ted/1.1, ted/1")
	t.Logf("listener: %v", attrs)
}

// waitClosed waits for sess to end and returns why.
func waitClosed(t *testing.T, sess Session) error {
	t.Helper()
	select {
	case <-sess.Context().Done():
		return context.Cause(sess.Context())
	case <-time.After(10 * time.Second):
		t.Fatal("session did not end")
		return nil
	}
}

func TestQUICCloseReason(t *testing.T) {
	p := newTestPKI(t)
	l := testListen(t, p.issue(t, "dist-1", pki.RoleDistributor), nil, nil)
	client := p.issue(t, "web-01", pki.RoleSubscriber)

	for _, closer := range []string{"dialler", "listener"} {
		t.Run(closer, func(t *testing.T) {
			dialled, accepted := connect(t, l, client, pki.RoleDistributor)
			from, to := dialled, accepted
			if closer == "listener" {
				from, to = accepted, dialled
			}
			ctx := testContext(t)
			// A stream that is open when the session ends.
			st, err := to.OpenStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if _, err := st.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			peerSt, err := from.AcceptStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer peerSt.Close()

			reason := "revision 7 withdrawn by the publisher"
			if err := from.Close(errors.New(reason)); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := from.Close(errors.New("again")); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			cause := waitClosed(t, to)
			if cause == nil || !strings.Contains(cause.Error(), reason) {
				t.Errorf("peer's context cause = %v", cause)
			}
			t.Logf("peer: %v", cause)
			if _, err := st.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), reason) {
				t.Errorf("peer's Read: %v", err)
			}
			if _, err := to.AcceptStream(ctx); err == nil || !strings.Contains(err.Error(), reason) {
				t.Errorf("peer's AcceptStream: %v", err)
			}
			if _, err := to.OpenStream(ctx); err == nil || !strings.Contains(err.Error(), reason) {
				t.Errorf("peer's OpenStream: %v", err)
			}
		})
	}
}

func TestQUICStreamCloseDeliversWrittenData(t *testing.T) {
	p := newTestPKI(t)
	l := testListen(t, p.issue(t, "dist-1", pki.RoleDistributor), nil, nil)
	dialled, accepted := connect(t, l, p.issue(t, "web-01", pki.RoleSubscriber), pki.RoleDistributor)
	ctx := testContext(t)

	data := streamData(7, 1<<20)
	type readResult struct {
		st   Stream
		data []byte
		err  error
	}
	read := make(chan readResult, 1)
	go func() {
		st, err := accepted.AcceptStream(ctx)
		if err != nil {
			read <- readResult{err: err}
			return
		}
		got, err := io.ReadAll(st)
		read <- readResult{st, got, err}
	}()
	st, err := dialled.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	res := <-read
	if res.err != nil || !bytes.Equal(res.data, data) {
		t.Fatalf("read %d bytes, %v; want %d bytes", len(res.data), res.err, len(data))
	}
	peerSt := res.st
	defer peerSt.Close()
	// The closed side no longer reads, so the peer's writes fail.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := peerSt.Write(make([]byte, 1024)); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("writes to a closed stream keep succeeding")
		}
	}
}

func TestQUICListenerClose(t *testing.T) {
	p := newTestPKI(t)
	l, err := Listen("127.0.0.1:0", p.issue(t, "dist-1", pki.RoleDistributor), nil, QUICConfig{})
	if err != nil {
		t.Fatal(err)
	}
	dialled, _ := connect(t, l, p.issue(t, "web-01", pki.RoleSubscriber), pki.RoleDistributor)

	acc := acceptAsync(context.Background(), l)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case res := <-acc:
		if !errors.Is(res.err, net.ErrClosed) {
			t.Errorf("Accept after Close = %v, %v; want net.ErrClosed", res.sess, res.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not unblock Accept")
	}
	if cause := waitClosed(t, dialled); cause == nil || !strings.Contains(cause.Error(), "dist-1 is shutting down") {
		t.Errorf("dialled session ended with %v", cause)
	}
}

func TestQUICAcceptContext(t *testing.T) {
	p := newTestPKI(t)
	l := testListen(t, p.issue(t, "dist-1", pki.RoleDistributor), nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	acc := acceptAsync(ctx, l)
	cancel()
	if res := <-acc; !errors.Is(res.err, context.Canceled) {
		t.Fatalf("Accept with a cancelled context = %v", res.err)
	}
}

func TestQUICDialUnreachable(t *testing.T) {
	p := newTestPKI(t)
	// A port that nothing listens on: the handshake times out.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	_, err = Dial(testContext(t), addr, p.issue(t, "web-01", pki.RoleSubscriber), pki.RoleDistributor,
		QUICConfig{HandshakeIdleTimeout: 200 * time.Millisecond})
	if err == nil || !containsAll(err.Error(), addr, "no answer") {
		t.Fatalf("Dial to nothing: %v", err)
	}
	t.Logf("dialler: %v", err)
}

func TestLoadCredentials(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t)
	files, err := pki.Issue(p.dir, "web-01", pki.RoleSubscriber, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	caFile, otherCA := p.caFile(), other.caFile()

	tests := []struct {
		name              string
		ca, cert, key     string
		want              pki.Role
		wantErr           []string
		wantWrongRoleSent bool
	}{
		{name: "ok", ca: caFile, cert: files.Cert, key: files.Key, want: pki.RoleSubscriber},
		{name: "wrong role", ca: caFile, cert: files.Cert, key: files.Key, want: pki.RoleDistributor,
			wantErr: []string{"cert " + files.Cert + ": role subscriber, this daemon needs distributor"}, wantWrongRoleSent: true},
		{name: "other CA", ca: otherCA, cert: files.Cert, key: files.Key, want: pki.RoleSubscriber,
			wantErr: []string{files.Cert, otherCA, "not issued by a trusted TED CA"}},
		{name: "missing CA", ca: filepath.Join(p.dir, "nope.crt"), cert: files.Cert, key: files.Key, want: pki.RoleSubscriber,
			wantErr: []string{"nope.crt"}},
		{name: "key of another node", ca: caFile, cert: files.Cert, key: filepath.Join(p.dir, "ca.key"), want: pki.RoleSubscriber,
			wantErr: []string{files.Cert, "ca.key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred, err := LoadCredentials(tt.ca, tt.cert, tt.key, tt.want)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if self := cred.Self(); self.Name != "web-01" || self.Role != pki.RoleSubscriber {
					t.Errorf("Self = %v", cred.Self())
				}
				return
			}
			if err == nil || !containsAll(err.Error(), tt.wantErr...) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if errors.Is(err, pki.ErrWrongRole) != tt.wantWrongRoleSent {
				t.Errorf("errors.Is(%v, ErrWrongRole) = %v", err, !tt.wantWrongRoleSent)
			}
		})
	}
}

// TestSizedConnKeepsOptimisations checks that quic-go took the branch of
// sizedConn that leaves the buffers alone (so it cannot have warned), and
// still enabled GSO as it does on a plain UDP socket.
func TestSizedConnKeepsOptimisations(t *testing.T) {
	p := newTestPKI(t)
	l := testListen(t, p.issue(t, "dist-1", pki.RoleDistributor), nil, nil)
	dialled, accepted := connect(t, l, p.issue(t, "web-01", pki.RoleSubscriber), pki.RoleDistributor)
	if !l.tr.Conn.(*sizedConn).sized.Load() {
		t.Error("quic-go did not call SetWriteBuffer on the listener's socket")
	}
	gso := dialled.(*quicSession).conn.ConnectionState().GSO
	if accepted.(*quicSession).conn.ConnectionState().GSO != gso {
		t.Error("listener and dialler disagree on GSO")
	}
	if plain := plainQUICGSO(t); gso != plain {
		t.Errorf("GSO through sizedConn = %v, on a plain socket = %v", gso, plain)
	}
}

// plainQUICGSO reports whether quic-go enables GSO for a connection over
// a plain *net.UDPConn.
func plainQUICGSO(t *testing.T) bool {
	t.Helper()
	tlsServer, tlsClient := rawTLSConfigs(t)
	ln, err := quic.ListenAddr("127.0.0.1:0", tlsServer, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	ctx := testContext(t)
	conn, err := tr.Dial(ctx, ln.Addr(), tlsClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	sconn, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sconn.CloseWithError(0, "")
	return conn.ConnectionState().GSO
}

func TestWarnSmallBuffers(t *testing.T) {
	tests := []struct {
		name     string
		rcv, snd int
		known    bool
		warn     bool
	}{
		{"big enough", udpBufferSize, 2 * udpBufferSize, true, false},
		{"receive too small", 425984, udpBufferSize, true, true},
		{"send too small", udpBufferSize, 425984, true, true},
		{"both too small", 425984, 425984, true, true},
		{"unknown", 0, 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newLogRecorder()
			warnSmallBuffers(rec.logger(), "127.0.0.1:1", tt.rcv, tt.snd, tt.known)
			close(rec.records)
			var n int
			for r := range rec.records {
				n++
				if !strings.Contains(r.Message, bufferHint) {
					t.Errorf("warning %q does not name the sysctls", r.Message)
				}
			}
			if want := map[bool]int{false: 0, true: 1}[tt.warn]; n != want {
				t.Errorf("%d warnings, want %d", n, want)
			}
		})
	}
}

func TestReasonText(t *testing.T) {
	if got := reasonText(nil); got != "session closed" {
		t.Errorf("reasonText(nil) = %q", got)
	}
	long := strings.Repeat("é", maxReasonLen)
	got := reasonText(errors.New(long))
	if len(got) > maxReasonLen || !strings.HasSuffix(got, "...") || !strings.HasPrefix(got, "éé") {
		t.Errorf("truncated to %d bytes: %q", len(got), got[len(got)-8:])
	}
	if !strings.HasPrefix(got, strings.TrimSuffix(got, "...")) || !utf8ValidPrefix(got) {
		t.Errorf("truncation split a character: %q", got)
	}
}

func utf8ValidPrefix(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func TestQUICConfigValidate(t *testing.T) {
	if err := DefaultQUICConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
	if err := (QUICConfig{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
	// An idle timeout at or under twice the default keepalive, with no
	// keepalive set, takes half of it as its keepalive.
	for _, idle := range []time.Duration{12 * time.Second, 15 * time.Second, 30 * time.Second, 2 * time.Second} {
		c := QUICConfig{MaxIdleTimeout: idle}
		if err := c.Validate(); err != nil {
			t.Errorf("idle timeout %v alone: %v", idle, err)
		}
		if got, want := c.withDefaults().KeepAlivePeriod, min(DefaultQUICConfig().KeepAlivePeriod, idle/2); got != want {
			t.Errorf("idle timeout %v alone: keepalive %v, want %v", idle, got, want)
		}
	}
	bad := []QUICConfig{
		{KeepAlivePeriod: time.Minute},
		{MaxIdleTimeout: -1},
		{MaxIncomingStreams: -1},
		{MaxConnectionReceiveWindow: 1 << 20, MaxStreamReceiveWindow: 2 << 20},
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: Validate = nil", c)
		}
	}
}
