package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"ted/transport"
)

// The reference: the same N sims against plain quic-go instead of TED, in
// the same run, so that TED's figures read as ratios to what quic-go
// itself needs on this machine at this N ("beyond what quic-go itself
// needs", in the issue's words).
//
// The reference server (`fleet reference-server`, this binary run again
// as a separate process) is quic-go with TED's TLS and QUIC settings
// (TLS 1.3, ECDSA P-256, a client certificate required and verified,
// session tickets off; TED's idle timeout, stream and flow-control
// limits, no keepalives of its own) and nothing else: per connection it
// sends TED's one-byte admission notice, so that the sims dial it as they
// dial a distributor, and keeps one goroutine accepting streams, the
// least a server that answers requests needs. On each stream it reads one
// byte and writes the payload. A sim dials, holds its session idle, and
// at the "publish" opens one stream and reads the payload to its end. No
// store, no hashing, no offers, no status. Once all are admitted the
// server is told to collect and hand back its free memory (SIGUSR1), as an
// idle ted does by itself.

// runReferenceServer is `fleet reference-server`: it serves until SIGTERM
// and prints its address on stdout once it listens.
func runReferenceServer(args []string) error {
	fs := flag.NewFlagSet("reference-server", flag.ContinueOnError)
	ca := fs.String("ca", "", "CA certificate that signs the clients'")
	cert := fs.String("cert", "", "server certificate")
	key := fs.String("key", "", "server key")
	payload := fs.Int("payload", 1<<20, "bytes written on each stream")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(*ca)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s: no certificate", *ca)
	}
	tlsConf := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{pair},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              pool,
		NextProtos:             []string{transport.ALPN, transport.ALPN1},
		SessionTicketsDisabled: true,
	}
	def := transport.DefaultQUICConfig()
	ln, err := quic.ListenAddr("127.0.0.1:0", tlsConf, &quic.Config{
		HandshakeIdleTimeout:       def.HandshakeIdleTimeout,
		MaxIdleTimeout:             def.MaxIdleTimeout,
		MaxIncomingStreams:         def.MaxIncomingStreams,
		MaxIncomingUniStreams:      -1,
		MaxStreamReceiveWindow:     def.MaxStreamReceiveWindow,
		MaxConnectionReceiveWindow: def.MaxConnectionReceiveWindow,
	})
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	// SIGUSR1, sent once all are admitted: collect and hand back what is
	// free (twice: quic-go's pooled buffers go at the second), so that the
	// idle RSS is what quic-go holds, not the garbage of the handshakes
	// (ted hands it back itself once quiet: cmd/ted, idleRelease).
	release := make(chan os.Signal, 1)
	signal.Notify(release, syscall.SIGUSR1)
	defer signal.Stop(release)
	go func() {
		for range release {
			debug.FreeOSMemory()
			debug.FreeOSMemory()
		}
	}()
	data := make([]byte, *payload)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Go(func() { serveReferenceConn(ctx, conn, data) })
	}
}

// serveReferenceConn admits conn as TED's listener does and answers each
// stream with data, until the connection or ctx ends.
func serveReferenceConn(ctx context.Context, conn *quic.Conn, data []byte) {
	defer conn.CloseWithError(0, "")
	st, err := conn.OpenUniStream()
	if err != nil {
		return
	}
	if _, err := st.Write([]byte{1}); err != nil { // transport's admitted
		return
	}
	if err := st.Close(); err != nil {
		return
	}
	for {
		s, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		go func() {
			defer s.Close()
			var req [1]byte
			if _, err := io.ReadFull(s, req[:]); err != nil {
				return
			}
			_, _ = s.Write(data)
		}()
	}
}

// refServer is a running reference server process.
type refServer struct {
	addr    string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// startReference starts the reference server with the distributor's
// certificate (the sims check they dial a distributor of their CA).
func (e *env) startReference(payload int) (*refServer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r := &refServer{done: make(chan struct{})}
	r.cmd = exec.Command(self, "reference-server", "-payload", fmt.Sprint(payload),
		"-ca", filepath.Join(e.caDir, "ca.crt"), "-cert", filepath.Join(e.caDir, distName+".crt"), "-key", filepath.Join(e.caDir, distName+".key"))
	r.cmd.Stderr = os.Stderr
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	go func() {
		r.waitErr = r.cmd.Wait()
		close(r.done)
	}()
	if err != nil {
		_ = r.cmd.Process.Kill()
		<-r.done
		return nil, fmt.Errorf("reference server did not start: %v (%v)", err, r.waitErr)
	}
	r.addr = strings.TrimSpace(line)
	return r, nil
}

func (r *refServer) pid() int { return r.cmd.Process.Pid }

func (r *refServer) stop() error {
	if err := terminate(r.cmd.Process, r.done, "reference server"); err != nil {
		return err
	}
	return r.waitErr
}

// refSession is a sim's session with the reference server: admitted once
// dialled; at the publish, it reads the payload on one stream.
func (f *fleet) refSession(ctx context.Context, s *sim, sess transport.Session) (welcomed bool, err error) {
	defer sess.Close(nil)
	if s.admitted.CompareAndSwap(0, time.Now().UnixNano()) {
		f.admitted.Add(1)
	}
	select {
	case <-ctx.Done():
		return true, nil
	case <-sess.Context().Done():
		return true, context.Cause(sess.Context())
	case <-f.publish:
	}
	if s.fetched.Load() != 0 {
		<-ctx.Done()
		return true, nil
	}
	st, err := sess.OpenStream(ctx)
	if err != nil {
		return true, err
	}
	defer st.Close()
	if _, err := st.Write([]byte{1}); err != nil {
		return true, err
	}
	n, err := io.Copy(io.Discard, st)
	if err != nil {
		return true, err
	}
	if n != int64(f.payload) {
		return true, fmt.Errorf("reference: read %d bytes of %d", n, f.payload)
	}
	if s.fetched.CompareAndSwap(0, time.Now().UnixNano()) {
		f.fetched.Add(1)
	}
	<-ctx.Done()
	return true, nil
}
