package main

import (
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReceiverReadsNeedTheToken: a receiver's books are read over HTTP
// (GET /totals) only with its read token, or on a listener of its own;
// gateways still post aggregates with no credential (only a signed
// aggregate is booked), and /metrics and /healthz stay open. Every read
// refused is counted. A read token in a file others may read is refused
// at start.
func TestReceiverReadsNeedTheToken(t *testing.T) {
	t.Parallel()
	pub, _ := makeGatewayKey(t, t.TempDir())
	addr, reads, metrics := freeAddr(t, "tcp"), freeAddr(t, "tcp"), freeAddr(t, "tcp")
	r := startReceiverOn(t, addr, []string{"--read-http", reads, "--metrics", metrics}, pub)
	get := func(url, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		url, token string
		want       int
	}{
		{"http://" + addr + "/totals", "", http.StatusUnauthorized},
		{"http://" + addr + "/totals", "not-the-token-at-all", http.StatusUnauthorized},
		{"http://" + addr + "/totals", r.token, http.StatusOK},
		{"http://" + reads + "/totals", "", http.StatusOK},
		{"http://" + metrics + "/healthz", "", http.StatusOK},
	} {
		if code, body := get(tc.url, tc.token); code != tc.want {
			t.Errorf("GET %s (token %q): %d %s; want %d", tc.url, tc.token, code, body, tc.want)
		}
	}
	resp, err := http.Post("http://"+addr+"/aggregates", "application/cose", strings.NewReader("not an aggregate"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST /aggregates without a credential: %s; want 400 (open, and refused only for what it is)", resp.Status)
	}
	if _, page := get("http://"+metrics+"/metrics", ""); !strings.Contains(page, "farthing_receiver_reads_refused_total 2") {
		t.Errorf("the refused reads are not counted:\n%s", page)
	}
	loose := filepath.Join(t.TempDir(), "read.token")
	os.WriteFile(loose, []byte("a-token-others-can-read\n"), 0o644)
	out, err := exec.Command(built(t, "farthing", "../farthing"), "receive", "--http", freeAddr(t, "tcp"), "--trust", pub,
		"--read-token-file", loose, "--data", t.TempDir()).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "0600") {
		t.Fatalf("a read token others may read: %v\n%s", err, out)
	}
}
