//go:build unix

package coaps

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// setReadBuffer asks for a socket receive buffer of size bytes and returns
// what the kernel granted (Linux caps the request at net.core.rmem_max and
// reports twice the usable size; the figure is what it reports).
func setReadBuffer(rc syscall.RawConn, size int) (int, error) {
	var got int
	var serr error
	err := rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size); serr != nil {
			return
		}
		got, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	if err != nil {
		return 0, err
	}
	return got, serr
}
