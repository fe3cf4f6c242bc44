//go:build !linux

package gateway

import "time"

// kernelClock is what the kernel says of the clock's synchronisation.
type kernelClock struct {
	known, unsynced bool
	maxError        time.Duration
}

// readKernelClock: only Linux is read.
func readKernelClock() kernelClock { return kernelClock{} }
