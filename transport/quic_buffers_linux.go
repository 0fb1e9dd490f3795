//go:build linux

package transport

import (
	"net"

	"golang.org/x/sys/unix"
)

// growSocketBuffers asks for want bytes of receive and send buffer and
// returns what the kernel reports (twice the usable size, which is what
// quic-go compares too). Beyond net.core.rmem_max and wmem_max it tries
// SO_RCVBUFFORCE and SO_SNDBUFFORCE, which succeed with CAP_NET_ADMIN, as
// quic-go would have.
func growSocketBuffers(conn *net.UDPConn, want int) (rcv, snd int, known bool) {
	// Errors are ignored: the sizes read back below tell what happened.
	_ = conn.SetReadBuffer(want)
	_ = conn.SetWriteBuffer(want)
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, 0, false
	}
	var rerr, serr error
	err = raw.Control(func(fd uintptr) {
		rcv, rerr = grow(int(fd), unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, want)
		snd, serr = grow(int(fd), unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, want)
	})
	if err != nil || rerr != nil || serr != nil {
		return 0, 0, false
	}
	return rcv, snd, true
}

func grow(fd, opt, force, want int) (int, error) {
	size, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
	if err != nil || size >= want {
		return size, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, want)
	return unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
}
