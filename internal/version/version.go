// Package version says which build of Farthing is running: the module
// version and the VCS revision the Go toolchain stamped into the binary.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// String is one line for `farthing version` and `farthingd --version`:
// the program, the module version (or "(devel)" for a build from a
// checkout), the VCS revision and time with "+modified" for a tree with
// changes, and the Go version and platform.
func String(program string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return fmt.Sprintf("%s (no build information) %s %s/%s", program, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}
	return format(program, info)
}

func format(program string, info *debug.BuildInfo) string {
	v := info.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, at, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+modified"
			}
		}
	}
	out := program + " " + v
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		out += " " + rev + modified
		if at != "" {
			out += " " + at
		}
	}
	return fmt.Sprintf("%s %s %s/%s", out, info.GoVersion, runtime.GOOS, runtime.GOARCH)
}
