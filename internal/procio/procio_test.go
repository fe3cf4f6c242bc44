package procio

import (
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// Writing a file and syncing it is counted: at least its bytes, in pages.
func TestWriteBytesCountsASyncedWrite(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/self/io is Linux's")
	}
	runtime.LockOSThread() // the counter is per thread group; keep it simple
	defer runtime.UnlockOSThread()
	dir := t.TempDir()
	var fs syscall.Statfs_t
	if syscall.Statfs(dir, &fs) == nil && fs.Type == 0x01021994 {
		t.Skip("the temporary directory is in memory (tmpfs): nothing goes to storage")
	}
	before := WriteBytes()
	f, err := os.Create(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 3*4096)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := WriteBytes() - before; got < 3*4096 {
		t.Fatalf("12 KB written and synced counted as %d bytes", got)
	}
}
