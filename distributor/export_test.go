package distributor

import (
	"context"

	"ted/transport"
)

// HoldSendSlots takes every slot of the chunk sends to children, as
// thousands of pulling children would, until release is called.
func (d *Distributor) HoldSendSlots() (release func()) {
	n := d.serving.nSlots
	if err := d.serving.sendSlots.Acquire(context.Background(), n); err != nil {
		panic(err) // a background context does not end
	}
	return func() { d.serving.sendSlots.Release(n) }
}

// Upstream is the session with the parent once registered, nil before.
func (d *Distributor) Upstream() transport.Session {
	_, up := d.peerSessions()
	return up
}
