package integration

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// udpEcho is a UDP echo server that remembers what it received.
type udpEcho struct {
	conn *net.UDPConn

	mu       sync.Mutex
	payloads []string
	peers    map[netip.AddrPort]bool
}

func startUDPEcho(t *testing.T) *udpEcho {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	setUDPBuffers(conn)
	e := &udpEcho{conn: conn, peers: make(map[netip.AddrPort]bool)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, udpProxyMaxDatagram)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			e.mu.Lock()
			e.payloads = append(e.payloads, string(buf[:n]))
			e.peers[from] = true
			e.mu.Unlock()
			_, _ = conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		wg.Wait()
	})
	return e
}

func (e *udpEcho) Addr() string { return e.conn.LocalAddr().String() }

// received returns the payloads received so far that start with prefix.
func (e *udpEcho) received(prefix string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, p := range e.payloads {
		if strings.HasPrefix(p, prefix) {
			out = append(out, p)
		}
	}
	return out
}

func (e *udpEcho) peerCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.peers)
}

func dialUDP(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		t.Fatal(err)
	}
	setUDPBuffers(c)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// roundTrip sends payload and waits up to timeout for it to come back,
// skipping other datagrams; it reports whether it did.
func roundTrip(t *testing.T, c *net.UDPConn, payload []byte, timeout time.Duration) bool {
	t.Helper()
	if _, err := c.Write(payload); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, udpProxyMaxDatagram)
	for {
		n, err := c.Read(buf)
		if isTimeout(err) {
			return false
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if bytes.Equal(buf[:n], payload) {
			return true
		}
	}
}

func mustRoundTrip(t *testing.T, c *net.UDPConn, payload []byte) time.Duration {
	t.Helper()
	start := time.Now()
	if !roundTrip(t, c, payload, 5*time.Second) {
		t.Fatalf("no echo of a %d-byte datagram within 5s", len(payload))
	}
	return time.Since(start)
}

// expectSilence fails if any datagram arrives within d.
func expectSilence(t *testing.T, c *net.UDPConn, d time.Duration) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, udpProxyMaxDatagram)
	n, err := c.Read(buf)
	if err == nil {
		t.Fatalf("got a %d-byte datagram %q through a cut link", n, buf[:min(n, 32)])
	}
	if !isTimeout(err) {
		t.Fatalf("read: %v", err)
	}
}

func TestUDPProxyForwardsAndCounts(t *testing.T) {
	echo := startUDPEcho(t)
	p := startUDPProxy(t, echo.Addr())
	clients := []*net.UDPConn{dialUDP(t, p.Addr()), dialUDP(t, p.Addr())}

	var total int64
	for i, c := range clients {
		for _, size := range []int{0, 1, 1200, 9000, 65507} {
			payload := bytes.Repeat([]byte{byte('a' + i)}, size)
			if size > 8 {
				copy(payload, fmt.Sprintf("c%d-%d", i, size))
			}
			mustRoundTrip(t, c, payload)
			total += int64(size)
		}
	}
	to, from := p.Bytes()
	if to != total || from != total {
		t.Errorf("Bytes() = %d, %d; want %d both ways", to, from, total)
	}
	if dt, df := p.Dropped(); dt != 0 || df != 0 {
		t.Errorf("Dropped() = %d, %d; want 0, 0", dt, df)
	}
	if n := echo.peerCount(); n != len(clients) {
		t.Errorf("echo server saw %d peers, want one per client (%d)", n, len(clients))
	}
}

func TestUDPProxyCut(t *testing.T) {
	echo := startUDPEcho(t)
	p := startUDPProxy(t, echo.Addr())
	c := dialUDP(t, p.Addr())

	mustRoundTrip(t, c, []byte("before"))
	p.Cut(true)
	if _, err := c.Write([]byte("while cut")); err != nil {
		t.Fatal(err)
	}
	expectSilence(t, c, 300*time.Millisecond)
	if got := echo.received("while"); len(got) != 0 {
		t.Errorf("target received %q through a cut link", got)
	}
	p.Cut(false)
	mustRoundTrip(t, c, []byte("after"))

	// A datagram already queued when the link goes down is lost too.
	p.SetDelay(200 * time.Millisecond)
	if _, err := c.Write([]byte("in flight")); err != nil {
		t.Fatal(err)
	}
	p.Cut(true)
	expectSilence(t, c, 600*time.Millisecond)
	p.Cut(false)
	p.SetDelay(0)
	mustRoundTrip(t, c, []byte("again"))

	if got := echo.received("in flight"); len(got) != 0 {
		t.Errorf("target received %q through a cut link", got)
	}
	if dt, _ := p.Dropped(); dt != 2 {
		t.Errorf("dropped %d datagrams to the target, want 2", dt)
	}
}

func TestUDPProxyRate(t *testing.T) {
	const rate = 200 << 10
	const size = 1024
	const count = (1 << 20) / size

	echo := startUDPEcho(t)
	p := startUDPProxy(t, echo.Addr())
	c := dialUDP(t, p.Addr())
	p.SetRate(rate)

	type tally struct {
		bytes int64
		last  time.Time
		err   error
	}
	done := make(chan tally, 1)
	go func() {
		var r tally
		buf := make([]byte, udpProxyMaxDatagram)
		for {
			// The link has gone quiet once nothing arrives for a second.
			if err := c.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
				r.err = err
				break
			}
			n, err := c.Read(buf)
			if err != nil {
				if !isTimeout(err) {
					r.err = err
				}
				break
			}
			r.bytes += int64(n)
			r.last = time.Now()
		}
		done <- r
	}()

	start := time.Now()
	payload := make([]byte, size)
	for i := range count {
		copy(payload, fmt.Sprintf("%08d", i))
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.bytes == 0 {
		t.Fatal("nothing came back")
	}
	elapsed := r.last.Sub(start)
	got := float64(r.bytes) / elapsed.Seconds()
	to, from := p.Bytes()
	dt, df := p.Dropped()
	t.Logf("echoed %d of %d bytes in %v: %.0f KiB/s at a %d KiB/s limit; forwarded %d/%d bytes, dropped %d/%d datagrams",
		r.bytes, count*size, elapsed.Round(time.Millisecond), got/1024, rate/1024, to, from, dt, df)
	if got > 1.3*rate {
		t.Errorf("throughput %.0f B/s is over 1.3 × the %d B/s limit", got, rate)
	}
	if got < 0.25*rate {
		t.Errorf("throughput %.0f B/s is far under the %d B/s limit", got, rate)
	}
	if dt == 0 {
		t.Errorf("a 1 MiB burst at %d B/s dropped nothing: the queue is not bounded", rate)
	}
}

func TestUDPProxyDelay(t *testing.T) {
	echo := startUDPEcho(t)
	p := startUDPProxy(t, echo.Addr())
	c := dialUDP(t, p.Addr())

	minRTT := func(label string, n int) time.Duration {
		best := time.Duration(1<<63 - 1)
		for i := range n {
			best = min(best, mustRoundTrip(t, c, fmt.Appendf(nil, "%s-%d", label, i)))
		}
		return best
	}
	base := minRTT("base", 5)
	p.SetDelay(50 * time.Millisecond)
	delayed := minRTT("delayed", 3)
	t.Logf("round trip %v without delay, %v with 50ms each way", base, delayed)
	if delayed-base < 90*time.Millisecond {
		t.Errorf("a 50ms one-way delay added only %v to the round trip", delayed-base)
	}
	if delayed > 2*time.Second {
		t.Errorf("a 50ms one-way delay gave a %v round trip", delayed)
	}
	p.SetDelay(0)
	mustRoundTrip(t, c, []byte("undelayed"))
}

// lossRun sends 1000 datagrams through a fresh proxy losing half of them
// and returns the ones that reached the target.
func lossRun(t *testing.T) []string {
	const count = 1000
	echo := startUDPEcho(t)
	p := startUDPProxy(t, echo.Addr())
	c := dialUDP(t, p.Addr())
	p.SetLoss(0.5)
	for i := range count {
		if _, err := c.Write(fmt.Appendf(nil, "d%04d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Each direction keeps order, so once a marker sent after the data
	// comes back the target has seen all the data that got through.
	// Markers are lost too: resend until one makes the round trip.
	for attempt := 0; ; attempt++ {
		if attempt == 200 {
			t.Fatal("no marker made it through a 50% lossy link in 200 tries")
		}
		if roundTrip(t, c, fmt.Appendf(nil, "fin%d", attempt), 100*time.Millisecond) {
			break
		}
	}
	got := echo.received("d")
	lost := float64(count-len(got)) / count
	dt, _ := p.Dropped()
	t.Logf("%d of %d datagrams reached the target (%.1f%% lost, proxy dropped %d)", len(got), count, 100*lost, dt)
	if lost < 0.35 || lost > 0.65 {
		t.Errorf("loss 0.5 lost %.1f%% of %d datagrams, want 35–65%%", 100*lost, count)
	}
	return got
}

func TestUDPProxyLoss(t *testing.T) {
	first := lossRun(t)
	second := lossRun(t)
	if !slices.Equal(first, second) {
		t.Errorf("two runs with the same traffic dropped different datagrams (%d vs %d through)", len(first), len(second))
	}
}

func TestUDPProxyCloseLeavesNoGoroutines(t *testing.T) {
	echo := startUDPEcho(t)
	p := startUDPProxy(t, echo.Addr())
	for range 3 {
		mustRoundTrip(t, dialUDP(t, p.Addr()), []byte("hello"))
	}
	// Leave datagrams queued behind a long delay and a slow rate.
	p.SetDelay(time.Hour)
	c := dialUDP(t, p.Addr())
	for range 10 {
		if _, err := c.Write(make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	p.SetRate(1)
	mustNotBlock(t, "Close", p.Close)
	p.Close() // idempotent

	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "ted/integration.(*udpProxy)") || strings.Contains(g, "ted/integration.(*udpPipe)") {
			t.Errorf("proxy goroutine left after Close:\n%s", g)
		}
	}
}

func mustNotBlock(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s blocked for 10s", what)
	}
}
