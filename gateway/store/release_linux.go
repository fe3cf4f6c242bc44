package store

import (
	"os"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// releaseMapped drops the state file's pages from this process's resident
// set. Opening the file rebuilds bbolt's freelist by reading every page
// (see NoFreelistSync in Open), which would otherwise keep the whole file
// counted in the daemon's RSS. The pages stay in the page cache; those
// the gateway touches again come back on their own.
func releaseMapped(db *bolt.DB) {
	fi, err := os.Stat(db.Path())
	if err != nil || fi.Size() == 0 {
		return
	}
	// The mapping's address comes from bbolt as a number; it is only
	// handed to the kernel, never dereferenced here.
	_, _, _ = unix.Syscall(unix.SYS_MADVISE, db.Info().Data, uintptr(fi.Size()), unix.MADV_DONTNEED)
}

// datasync flushes f's data (and the size it needs to read it back).
func datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
