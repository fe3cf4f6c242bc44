//go:build !linux

package store

import bolt "go.etcd.io/bbolt"

// releaseMapped is a no-op where the kernel's accounting differs.
func releaseMapped(*bolt.DB) {}
