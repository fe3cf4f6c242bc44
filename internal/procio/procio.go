// Package procio reads what the kernel counts of a process's storage I/O
// (/proc/self/io on Linux): the figure a gateway on an SD card or eMMC is
// measured by.
package procio

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// WriteBytes is write_bytes of /proc/self/io: the bytes this process
// caused to be written to storage, counted a page (4 KB) at a time each
// time a page it dirtied goes to disk; the filesystem's own journal is
// not in it. It is 0 where the kernel has no such file.
func WriteBytes() uint64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "write_bytes: "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
