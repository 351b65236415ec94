//go:build unix

package backends

import (
	"errors"
	"net"
	"syscall"
)

const canPeek = true

// peekAlive reports whether an idle connection is still open: a
// non-blocking MSG_PEEK finds nothing to read (EAGAIN). End of stream, an
// error or unexpected bytes mean the backend closed it (or broke the
// protocol).
func peekAlive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK)
		return true // never wait
	})
	return err == nil && alive
}
