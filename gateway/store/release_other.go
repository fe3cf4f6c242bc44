//go:build !linux

package store

import (
	"os"

	bolt "go.etcd.io/bbolt"
)

// releaseMapped is a no-op where the kernel's accounting differs.
func releaseMapped(*bolt.DB) {}

// datasync flushes f.
func datasync(f *os.File) error { return f.Sync() }
