// Command quicraw is the reference of the one-hop budget (one hop ≥ 0.7 ×
// raw quic-go single-stream throughput, same run; bench/README.md): plain
// quic-go, one connection, ONE stream, to a peer that reads and discards.
// No TED protocol, no store, no hashing.
//
// It uses what TED's transport uses (transport/quic.go, transport/tls.go)
// wherever that could change the throughput: TLS 1.3 with an ECDSA P-256
// certificate, session tickets off, and the flow-control ceilings of
// transport.DefaultQUICConfig (16 MiB per stream, 64 MiB per connection).
// quic-go sizes the UDP buffers itself (7 MiB, like TED's listenUDP).
//
//	quicraw serve  --listen 127.0.0.1:0 --addr-file F   # until killed
//	quicraw send   --to ADDR --bytes N                  # prints one line
//
// The server accepts any number of connections, one after the other or at
// once; on each it accepts one stream, reads it to its end, and writes back
// the number of bytes it read (8 bytes, big-endian) before closing. The
// client times from before the dial to that answer, so its figure covers
// the handshake and every byte having reached the peer's application, as
// `ted publish`'s wall time does. The payload is a 64 MiB buffer of random
// bytes (ChaCha8, generated before the clock starts) sent over and over:
// QUIC does not compress, so this costs the same as N distinct bytes.
//
// With --cpuprofile, send writes a CPU profile of the client; serve writes
// one of the server when it gets SIGTERM or SIGINT.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
)

const alpn = "quicraw"

// The flow-control ceilings of transport.DefaultQUICConfig. Kept as
// literals so that this tool builds whatever the transport package's state.
const (
	maxStreamReceiveWindow     = 16 << 20
	maxConnectionReceiveWindow = 64 << 20
)

func quicConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:       5 * time.Second,
		MaxIdleTimeout:             30 * time.Second,
		KeepAlivePeriod:            10 * time.Second,
		MaxIncomingStreams:         1024,
		MaxStreamReceiveWindow:     maxStreamReceiveWindow,
		MaxConnectionReceiveWindow: maxConnectionReceiveWindow,
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: quicraw serve|send [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "send":
		err = send(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "quicraw:", err)
		os.Exit(1)
	}
}

func startProfile(file string) (stop func(), err error) {
	if file == "" {
		return func() {}, nil
	}
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "UDP address to listen on")
	addrFile := fs.String("addr-file", "", "write the bound address here once listening")
	profile := fs.String("cpuprofile", "", "write a CPU profile here on SIGTERM")
	fs.Parse(args)

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	stop, err := startProfile(*profile)
	if err != nil {
		return err
	}
	defer stop()

	ln, err := quic.ListenAddr(*listen, serverTLS(), quicConfig())
	if err != nil {
		return err
	}
	defer ln.Close()
	if *addrFile != "" {
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(ln.Addr().String()+"\n"), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			return err
		}
	}
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			if err := discard(ctx, conn); err != nil {
				fmt.Fprintln(os.Stderr, "quicraw serve:", err)
			}
		}()
	}
}

// discard reads one stream to its end and answers with the count.
func discard(ctx context.Context, conn *quic.Conn) error {
	defer conn.CloseWithError(0, "")
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10) // what TED's framing reads through
	var n int64
	for {
		k, err := st.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	var answer [8]byte
	binary.BigEndian.PutUint64(answer[:], uint64(n))
	if _, err := st.Write(answer[:]); err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return err
	}
	// Wait for the client to close, so the answer is not cut off.
	<-conn.Context().Done()
	return nil
}

func send(args []string) error {
	fs := flag.NewFlagSet("send", flag.ExitOnError)
	to := fs.String("to", "", "server address")
	total := fs.Int64("bytes", 1<<30, "bytes to send")
	chunk := fs.Int("write", 1<<20, "bytes per Write call")
	asJSON := fs.Bool("json", false, "print JSON")
	profile := fs.String("cpuprofile", "", "write a CPU profile of the timed part here")
	fs.Parse(args)
	if *to == "" {
		return errors.New("send: --to is required")
	}

	payload := make([]byte, 64<<20)
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	_, _ = mrand.NewChaCha8(seed).Read(payload)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	stop, err := startProfile(*profile)
	if err != nil {
		return err
	}
	start := time.Now()
	conn, err := quic.DialAddr(ctx, *to, clientTLS(), quicConfig())
	if err != nil {
		return err
	}
	defer conn.CloseWithError(0, "")
	handshake := time.Since(start)
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	var sent int64
	for off := 0; sent < *total; {
		n := int(min(int64(*chunk), *total-sent))
		if off+n > len(payload) {
			off = 0
		}
		k, err := st.Write(payload[off : off+n])
		sent += int64(k)
		off += k
		if err != nil {
			return err
		}
	}
	if err := st.Close(); err != nil {
		return err
	}
	var answer [8]byte
	if _, err := io.ReadFull(st, answer[:]); err != nil {
		return fmt.Errorf("reading the server's count: %w", err)
	}
	elapsed := time.Since(start)
	stop()
	if got := int64(binary.BigEndian.Uint64(answer[:])); got != sent {
		return fmt.Errorf("server read %d bytes, sent %d", got, sent)
	}
	mbps := float64(sent) / 1e6 / elapsed.Seconds()
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{
			"bytes": sent, "seconds": elapsed.Seconds(), "handshake_seconds": handshake.Seconds(), "mb_per_s": mbps,
		})
	}
	fmt.Printf("sent %d bytes in %.3f s (handshake %.1f ms): %.1f MB/s\n", sent, elapsed.Seconds(), float64(handshake.Microseconds())/1000, mbps)
	return nil
}

// serverTLS is a throwaway self-signed ECDSA P-256 certificate (TED's pki
// issues P-256 too), TLS 1.3, no session tickets.
func serverTLS() *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "quicraw"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		panic(err)
	}
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:             []string{alpn},
		SessionTicketsDisabled: true,
	}
}

func clientTLS() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // the reference measures the data path, not PKI
		NextProtos:         []string{alpn},
	}
}
