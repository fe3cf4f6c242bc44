package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNotifiesItsServiceManager runs the daemon as systemd runs a
// Type=notify service with WatchdogSec=: a datagram socket in
// NOTIFY_SOCKET and the watchdog interval in WATCHDOG_USEC. The daemon
// says READY=1 once its MQTT listener accepts, feeds the watchdog, says
// RELOADING=1 and READY=1 around a SIGHUP's reload, and STOPPING=1 on
// SIGTERM.
func TestNotifiesItsServiceManager(t *testing.T) {
	bin := buildDaemon(t)
	g := newGatewayDir(t, []string{"meter-1"}, "", "")
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(want string, within time.Duration) string {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case m := <-msgs:
				if strings.HasPrefix(m, want) {
					return m
				}
			case <-deadline:
				t.Fatalf("no %q within %v", want, within)
			}
		}
	}
	cmd := exec.Command(bin, "--config", g.config)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=1000000")
	d := startDaemonCmd(t, cmd, g.config, g.mqtt)
	ready := next("READY=1", 10*time.Second)
	if !strings.Contains(ready, "STATUS=serving") {
		t.Errorf("ready message %q has no status", ready)
	}
	next("WATCHDOG=1", 3*time.Second)
	next("WATCHDOG=1", 3*time.Second)
	d.cmd.Process.Signal(syscall.SIGHUP)
	next("RELOADING=1", 5*time.Second)
	if m := next("READY=1", 5*time.Second); !strings.Contains(m, "reloaded") {
		t.Errorf("after the reload: %q", m)
	}
	d.stop(t)
	next("STOPPING=1", 5*time.Second)
}

// TestHelpAndBadFlags: --help lists every flag with its default and
// examples on stdout (exit 0); a wrong flag or a stray argument is one
// line on stderr that points to --help (exit 2).
func TestHelpAndBadFlags(t *testing.T) {
	var out, errOut strings.Builder
	if code := run([]string{"--help"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "-config") ||
		!strings.Contains(out.String(), `(default "info")`) || !strings.Contains(out.String(), "examples:\n  farthingd ") {
		t.Errorf("--help: exit %d:\n%s%s", code, out.String(), errOut.String())
	}
	for _, args := range [][]string{{"--bogus"}, {"extra"}} {
		out.Reset()
		errOut.Reset()
		if code := run(args, &out, &errOut); code != 2 || strings.Count(errOut.String(), "\n") != 1 || !strings.Contains(errOut.String(), "see farthingd --help") {
			t.Errorf("farthingd %v: exit %d, stderr %q", args, code, errOut.String())
		}
	}
}
