package gateway

import (
	"time"

	"golang.org/x/sys/unix"
)

// kernelClock is what the kernel says of the clock's synchronisation.
type kernelClock struct {
	known, unsynced bool
	maxError        time.Duration
}

// readKernelClock reads adjtimex without changing anything.
func readKernelClock() kernelClock {
	var tx unix.Timex
	if _, err := unix.Adjtimex(&tx); err != nil {
		return kernelClock{}
	}
	return kernelClock{known: true, unsynced: tx.Status&unix.STA_UNSYNC != 0, maxError: time.Duration(tx.Maxerror) * time.Microsecond}
}
