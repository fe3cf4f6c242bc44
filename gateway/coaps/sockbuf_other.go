//go:build !unix

package coaps

import "syscall"

// setReadBuffer leaves the socket's receive buffer as the system sets it.
func setReadBuffer(syscall.RawConn, int) (int, error) { return 0, nil }
