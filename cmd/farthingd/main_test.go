package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/operator"
	"github.com/farthing-iot/farthing/internal/pgtest"
)

// binDir holds the binaries the tests build once: farthingd and farthing.
var binDir string

// rlimitHelperEnv, when set in the environment to a number N, makes the
// test binary a launcher: it lowers RLIMIT_NOFILE (soft and hard, so the
// Go runtime cannot raise it again) to N and executes its arguments.
const rlimitHelperEnv = "FARTHING_TEST_NOFILE"

func TestMain(m *testing.M) {
	if n := os.Getenv(rlimitHelperEnv); n != "" {
		limit, _ := strconv.ParseUint(n, 10, 64)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: limit, Max: limit}); err != nil {
			fmt.Fprintln(os.Stderr, "setrlimit:", err)
			os.Exit(3)
		}
		err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
		fmt.Fprintln(os.Stderr, "exec:", err)
		os.Exit(3)
	}
	// Every daemon these tests start (crash tests included) reconciles its
	// books after each commit and dies if they do not add up.
	os.Setenv(ledger.VerifyEnv, "1")
	dir, err := os.MkdirTemp("", "farthingd-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if pg != nil {
		pg.Stop()
	}
	os.Exit(code)
}

// pg is the package's PostgreSQL cluster, started by the first test that
// needs it and stopped after the last.
var (
	pg     *pgtest.Cluster
	pgOnce sync.Once
	pgErr  error
)

func postgres(t *testing.T) *pgtest.Cluster {
	t.Helper()
	pgOnce.Do(func() { pg, pgErr = pgtest.Start() })
	if pgErr != nil {
		t.Fatal(pgErr)
	}
	return pg
}

// built returns the path of a binary built from pkg (relative to this
// package), building it on first use.
func built(t *testing.T, name, pkg string) string {
	t.Helper()
	bin := filepath.Join(binDir, name)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// buildDaemon returns the farthingd binary, built once per test run.
func buildDaemon(t *testing.T) string { return built(t, "farthingd", ".") }

// freeAddr returns a loopback address no one listens on now.
func freeAddr(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// operatorGet asks the daemon's operator API on its Unix socket.
func operatorGet(dataDir, path string) (*http.Response, error) {
	sock := filepath.Join(dataDir, operator.Socket)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	return c.Get("http://farthingd" + path)
}

// inspect reads the running daemon's report through its operator socket.
func inspect(t *testing.T, dataDir string) *ledger.Report {
	t.Helper()
	resp, err := operatorGet(dataDir, "/inspect")
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	defer resp.Body.Close()
	var rep ledger.Report
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatalf("inspect: %v", err)
	}
	return &rep
}

// listening waits up to within for a TCP listener on addr.
func listening(addr string, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
