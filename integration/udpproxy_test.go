package integration

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// udpProxy is a user-space UDP relay that tests put between two QUIC nodes
// on loopback to emulate a slow, lossy or cut link (there is no tc netem
// here). Clients send to Addr; each client address gets its own upstream
// socket towards the target, so several clients can share one proxy and the
// target sees them as distinct peers.
//
// Each direction (client→target and target→client) is an independent
// one-way link with the same settings:
//
//   - Cut: while true every datagram is dropped, both those arriving and
//     those already queued when they come due (the link is down).
//   - SetLoss: each arriving datagram is dropped with the given probability,
//     drawn from a fixed-seed generator per direction, so the same traffic
//     gives the same drops run after run.
//   - SetRate: a token bucket per direction (so the link is full duplex:
//     each direction gets the whole rate). It allows a burst of
//     udpProxyBurstTime worth of bytes; beyond that datagrams wait in a
//     queue holding up to udpProxyQueueTime worth of bytes (never less than
//     udpProxyMinQueue) and are dropped when it is full, like a router.
//   - SetDelay: added one-way latency per direction, on top of the time
//     spent queued for the rate.
//
// Datagrams leave each direction in the order they arrived. Settings may
// change while traffic flows; a change applies to datagrams that arrive
// after it, datagrams already queued keep their release time (so lowering
// the delay does not let later datagrams overtake earlier ones).
type udpProxy struct {
	conn   *net.UDPConn // client-facing socket
	target *net.UDPAddr

	rate  atomic.Int64  // bytes per second, 0 = unlimited
	delay atomic.Int64  // time.Duration
	loss  atomic.Uint64 // math.Float64bits of the drop probability
	cut   atomic.Bool

	toTarget, fromTarget udpPipe

	mu       sync.Mutex
	sessions map[netip.AddrPort]*udpSession
	closed   bool

	done     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
}

const (
	// udpProxyMaxDatagram is the read buffer size: any UDP payload fits.
	udpProxyMaxDatagram = 64 << 10
	// udpProxySocketBuffer is asked of the kernel for every proxy socket
	// so bursts are queued by the proxy's own rules, not dropped by the
	// kernel before the proxy reads them.
	udpProxySocketBuffer = 4 << 20
	// udpProxyBurstTime is the token bucket depth, in time at the rate.
	udpProxyBurstTime = 10 * time.Millisecond
	// udpProxyQueueTime is the rate queue bound, in time at the rate.
	udpProxyQueueTime = 100 * time.Millisecond
	// udpProxyMinQueue keeps room for one largest datagram at low rates.
	udpProxyMinQueue = 64 << 10
	// udpProxyMaxHeld bounds the bytes held per direction in any case
	// (large delay with unlimited rate), so memory stays bounded.
	udpProxyMaxHeld = 64 << 20
)

// udpSession is one client address and its socket towards the target.
type udpSession struct {
	client netip.AddrPort
	up     *net.UDPConn // connected to the target
}

// udpDatagram is one datagram waiting in a direction's queue.
type udpDatagram struct {
	data []byte
	at   time.Time // when it leaves
	// Where it goes: up for client→target, client for target→client.
	up     *net.UDPConn
	client netip.AddrPort
}

// udpPipe is one direction of the link.
type udpPipe struct {
	proxy     *udpProxy
	forwarded atomic.Int64 // payload bytes
	dropped   atomic.Int64 // datagrams
	kick      chan struct{}

	mu     sync.Mutex
	rng    *rand.Rand
	queue  []udpDatagram // FIFO, release times non-decreasing
	held   int           // payload bytes in queue
	last   time.Time     // release time of the newest queued datagram
	bucket tokenBucket
}

// tokenBucket is a byte token bucket whose balance may go negative: the
// debt is the bytes queued behind the rate, and a datagram leaves when the
// debt it ends has been paid off.
type tokenBucket struct {
	rate     int64 // the rate the balance was last refilled at, 0 = unset
	tokens   float64
	refilled time.Time
}

// schedule takes n bytes from the bucket and returns when they have passed
// the rate, or false if the queue is full and the datagram is dropped.
func (b *tokenBucket) schedule(now time.Time, n int, rate int64) (time.Time, bool) {
	if rate <= 0 {
		b.rate = 0
		return now, true
	}
	burst := float64(rate) * udpProxyBurstTime.Seconds()
	limit := max(float64(udpProxyMinQueue), float64(rate)*udpProxyQueueTime.Seconds())
	if b.rate == 0 {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.refilled).Seconds()*float64(b.rate))
	}
	b.rate, b.refilled = rate, now
	if b.tokens-float64(n) < -limit {
		return time.Time{}, false
	}
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return now, true
	}
	return now.Add(time.Duration(-b.tokens / float64(rate) * float64(time.Second))), true
}

// startUDPProxy listens on 127.0.0.1:0 and relays datagrams to target (a
// host:port); t.Cleanup stops it and waits for all its goroutines.
func startUDPProxy(t testing.TB, target string) *udpProxy {
	t.Helper()
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatalf("udp proxy target %q: %v", target, err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("udp proxy listen: %v", err)
	}
	setUDPBuffers(conn)
	p := &udpProxy{
		conn:     conn,
		target:   taddr,
		sessions: make(map[netip.AddrPort]*udpSession),
		done:     make(chan struct{}),
	}
	p.toTarget.init(p, 1)
	p.fromTarget.init(p, 2)
	p.wg.Add(3)
	go p.serveClients()
	go p.toTarget.run()
	go p.fromTarget.run()
	t.Cleanup(p.Close)
	return p
}

func setUDPBuffers(c *net.UDPConn) {
	// Best effort: the kernel caps these at net.core.[rw]mem_max.
	_ = c.SetReadBuffer(udpProxySocketBuffer)
	_ = c.SetWriteBuffer(udpProxySocketBuffer)
}

// Addr is the host:port clients send to.
func (p *udpProxy) Addr() string { return p.conn.LocalAddr().String() }

// SetRate limits each direction to bytesPerSecond (a token bucket per
// direction); 0 or less means unlimited.
func (p *udpProxy) SetRate(bytesPerSecond int64) { p.rate.Store(max(bytesPerSecond, 0)) }

// SetDelay adds d of one-way latency to each direction.
func (p *udpProxy) SetDelay(d time.Duration) { p.delay.Store(int64(max(d, 0))) }

// SetLoss drops each datagram with probability fraction (clamped to 0..1),
// from a fixed-seed generator per direction.
func (p *udpProxy) SetLoss(fraction float64) {
	if math.IsNaN(fraction) {
		fraction = 0
	}
	p.loss.Store(math.Float64bits(min(max(fraction, 0), 1)))
}

// Cut drops every datagram, arriving or queued, while down is true.
func (p *udpProxy) Cut(down bool) { p.cut.Store(down) }

// Bytes is the payload bytes forwarded client→target and target→client.
// A datagram is counted before it is written, so once a peer has received
// it the count includes it.
func (p *udpProxy) Bytes() (toTarget, fromTarget int64) {
	return p.toTarget.forwarded.Load(), p.fromTarget.forwarded.Load()
}

// Dropped is the datagrams dropped each way, for any reason (cut, loss,
// full queue, failed write).
func (p *udpProxy) Dropped() (toTarget, fromTarget int64) {
	return p.toTarget.dropped.Load(), p.fromTarget.dropped.Load()
}

// Close stops the proxy and waits for its goroutines; it is idempotent and
// also run by t.Cleanup.
func (p *udpProxy) Close() {
	p.stopOnce.Do(func() {
		close(p.done)
		_ = p.conn.Close()
		p.mu.Lock()
		p.closed = true
		for _, s := range p.sessions {
			_ = s.up.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
}

// serveClients reads datagrams from clients and queues them to the target.
func (p *udpProxy) serveClients() {
	defer p.wg.Done()
	buf := make([]byte, udpProxyMaxDatagram)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s, ok := p.session(from)
		if !ok {
			return
		}
		if s == nil {
			p.toTarget.dropped.Add(1)
			continue
		}
		p.toTarget.push(udpDatagram{data: bytes.Clone(buf[:n]), up: s.up})
	}
}

// session returns the client's session, creating it on first use; nil if
// the upstream socket could not be made, and false once the proxy is closed.
func (p *udpProxy) session(client netip.AddrPort) (*udpSession, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, false
	}
	if s := p.sessions[client]; s != nil {
		return s, true
	}
	up, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		return nil, true
	}
	setUDPBuffers(up)
	s := &udpSession{client: client, up: up}
	p.sessions[client] = s
	p.wg.Add(1)
	go p.serveUpstream(s)
	return s, true
}

// serveUpstream reads the target's replies to one client.
func (p *udpProxy) serveUpstream(s *udpSession) {
	defer p.wg.Done()
	buf := make([]byte, udpProxyMaxDatagram)
	for {
		n, err := s.up.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// E.g. ECONNREFUSED while nothing listens at the target.
			continue
		}
		p.fromTarget.push(udpDatagram{data: bytes.Clone(buf[:n]), client: s.client})
	}
}

func (q *udpPipe) init(p *udpProxy, seed uint64) {
	q.proxy = p
	q.kick = make(chan struct{}, 1)
	q.rng = rand.New(rand.NewPCG(seed, 0x7ed))
}

// push applies cut, loss and rate to an arriving datagram and queues it.
func (q *udpPipe) push(d udpDatagram) {
	p := q.proxy
	if p.cut.Load() {
		q.dropped.Add(1)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if loss := math.Float64frombits(p.loss.Load()); loss > 0 && q.rng.Float64() < loss {
		q.dropped.Add(1)
		return
	}
	if q.held+len(d.data) > udpProxyMaxHeld {
		q.dropped.Add(1)
		return
	}
	now := time.Now()
	leave, ok := q.bucket.schedule(now, len(d.data), p.rate.Load())
	if !ok {
		q.dropped.Add(1)
		return
	}
	d.at = leave.Add(time.Duration(p.delay.Load()))
	if d.at.Before(q.last) {
		d.at = q.last
	}
	q.last = d.at
	q.queue = append(q.queue, d)
	q.held += len(d.data)
	if len(q.queue) == 1 {
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
}

// run releases queued datagrams when they come due, sleeping on a timer
// until the head of the queue is due or a datagram arrives in an empty queue.
func (q *udpPipe) run() {
	defer q.proxy.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var due []udpDatagram
	for {
		now := time.Now()
		q.mu.Lock()
		n := 0
		for n < len(q.queue) && !q.queue[n].at.After(now) {
			n++
		}
		due = append(due[:0], q.queue[:n]...)
		clear(q.queue[:n])
		q.queue = q.queue[n:]
		if len(q.queue) == 0 {
			q.queue = nil
		}
		for _, d := range due {
			q.held -= len(d.data)
		}
		wait := time.Duration(-1)
		if len(q.queue) > 0 {
			wait = q.queue[0].at.Sub(now)
		}
		q.mu.Unlock()

		for i := range due {
			q.send(&due[i])
			due[i] = udpDatagram{}
		}
		if len(due) > 0 {
			// Sending took time: look again before sleeping.
			select {
			case <-q.proxy.done:
				return
			default:
				continue
			}
		}
		if wait >= 0 {
			timer.Reset(wait)
		}
		select {
		case <-q.proxy.done:
			return
		case <-q.kick:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// send writes one due datagram unless the link is cut.
func (q *udpPipe) send(d *udpDatagram) {
	if q.proxy.cut.Load() {
		q.dropped.Add(1)
		return
	}
	n := int64(len(d.data))
	q.forwarded.Add(n)
	var err error
	if d.up != nil {
		_, err = d.up.Write(d.data)
	} else {
		_, err = q.proxy.conn.WriteToUDPAddrPort(d.data, d.client)
	}
	if err != nil {
		q.forwarded.Add(-n)
		q.dropped.Add(1)
	}
}
