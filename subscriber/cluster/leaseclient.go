package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"ted/transport"
)

// LeaseClient asks the parent distributor for the cluster's lease over a
// lease session of its own (a hello with the cluster and node, epoch 0).
// It is an Authority.
type LeaseClient struct {
	addr  string
	dial  transport.DialFunc
	hello transport.Hello

	mu   sync.Mutex
	sess transport.Session
	conn *transport.Conn
	// check, if set, refuses a parent whose certificate must no longer be
	// trusted (CheckPeer).
	check func(transport.Identity) error
}

// leaseTimeout bounds one lease request, dial included.
const leaseTimeout = 3 * time.Second

// NewLeaseClient returns a client of the lease authority at addr; hello
// names the cluster's subscriber (its certificate's name), its channels,
// the cluster, this node and this process (Instance, which the content
// sessions must carry too).
func NewLeaseClient(addr string, dial transport.DialFunc, hello transport.Hello) *LeaseClient {
	hello.Epoch = 0
	return &LeaseClient{addr: addr, dial: dial, hello: hello}
}

// NewInstance returns a random name for this process: the lease is held by
// node and instance, so a second process with the same node name (a copied
// config) is another holder.
func NewInstance() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

// Acquire asks for the lease, or renews it.
func (c *LeaseClient) Acquire(ctx context.Context) (Grant, error) {
	l, err := c.request(ctx, &transport.LeaseRequest{})
	if err != nil {
		return Grant{}, err
	}
	return Grant{Granted: l.Granted, Holder: l.Holder, Epoch: l.Epoch,
		TTL: time.Duration(l.TTL) * time.Millisecond, RetryIn: time.Duration(l.RetryIn) * time.Millisecond}, nil
}

// Release gives the lease up.
func (c *LeaseClient) Release(ctx context.Context) error {
	_, err := c.request(ctx, &transport.LeaseRequest{Release: true})
	return err
}

// CheckPeer makes every request check the parent's identity first with
// check (the credentials' CheckRevoked): a revocation list only stops new
// handshakes, and the lease session is kept between requests, so a parent
// revoked since it was dialled would be trusted with the lease otherwise.
// A session that fails the check is closed with the reason, and the
// request fails with it.
func (c *LeaseClient) CheckPeer(check func(transport.Identity) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.check = check
}

// Close ends the lease session.
func (c *LeaseClient) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(nil)
}

func (c *LeaseClient) dropLocked(err error) {
	if c.conn != nil {
		c.conn.Close()
	}
	if c.sess != nil {
		c.sess.Close(err)
	}
	c.sess, c.conn = nil, nil
}

func (c *LeaseClient) request(ctx context.Context, req *transport.LeaseRequest) (*transport.Lease, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, leaseTimeout)
	defer cancel()
	if c.sess != nil && c.sess.Context().Err() != nil {
		c.dropLocked(nil) // ended meanwhile: dial again
	}
	if c.sess != nil && c.check != nil {
		if err := c.check(c.sess.Peer()); err != nil {
			c.dropLocked(err)
			return nil, fmt.Errorf("lease: %s: %w", c.addr, err)
		}
	}
	if c.conn == nil {
		sess, err := c.dial(ctx, c.addr)
		if err != nil {
			return nil, fmt.Errorf("lease: dial %s: %w", c.addr, err)
		}
		if c.check != nil {
			if err := c.check(sess.Peer()); err != nil {
				sess.Close(err)
				return nil, fmt.Errorf("lease: %s: %w", c.addr, err)
			}
		}
		hello := c.hello
		conn, _, err := transport.ClientHello(ctx, sess, &hello)
		if err != nil {
			sess.Close(nil)
			return nil, fmt.Errorf("lease: %w", err)
		}
		c.sess, c.conn = sess, conn
	}
	conn := c.conn
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := conn.Send(req); err != nil {
		c.dropLocked(nil)
		return nil, fmt.Errorf("lease: %w", err)
	}
	msg, err := conn.Receive()
	if err != nil {
		c.dropLocked(nil)
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("lease: %s: %w", c.addr, err)
	}
	l, ok := msg.(*transport.Lease)
	if !ok {
		c.dropLocked(nil)
		return nil, fmt.Errorf("lease: %s answered %T", c.addr, msg)
	}
	return l, nil
}
