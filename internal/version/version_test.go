package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.4.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-11-30T17:00:00Z"},
			{Key: "vcs.modified", Value: "true"}}}
	got := format("farthingd", info)
	for _, want := range []string{"farthingd v0.4.0 ", "0123456789ab+modified", "2026-11-30T17:00:00Z", "go1.26.8"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if got := format("farthing", &debug.BuildInfo{GoVersion: "go1.26.8"}); !strings.HasPrefix(got, "farthing (devel) go1.26.8") {
		t.Errorf("a build without a version or revision: %q", got)
	}
}
