package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// syncBuffer is a bytes.Buffer a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until out holds want, or fails.
func waitFor(t *testing.T, out *syncBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(out.String(), want) {
			return
		}
	}
	t.Fatalf("the receiver never printed %q:\n%s", want, out.String())
}

// A receiver running with a payouts file, fed over HTTP, reports the gap
// an aggregate dropped on the way leaves, holds the provider's payout
// while it is open, and pays on its schedule once the aggregate arrives.
func TestReceiverPaysWhenTheGapCloses(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, nil, "keygen", "--type", "ed25519", "--out", dir)
	k, err := keyfile.Load(filepath.Join(dir, "device.key"))
	if err != nil || k.Private == nil {
		t.Fatalf("gateway key: %v", err)
	}
	s, err := protocol.NewEd25519Signer(k.Private)
	if err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(dir, "payouts.yaml")
	os.WriteFile(policy, []byte(`payouts:
  - {provider: stadtwerk, threshold: "1.00 EUR", platform_fee_bps: 1000, on_gap: wait,
     payees: [{id: creator, weight: 70}, {id: publisher, weight: 30}]}
`), 0o600)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(os.Args[0], "receive", "--http", addr, "--trust", filepath.Join(dir, "device.pub"),
		"--payouts", policy, "--every", "50ms", "--data", filepath.Join(dir, "recv"))
	cmd.Env = append(os.Environ(), "FARTHING_TEST_AS_CLI=1")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, out, "receiving on")
	post := func(seq uint64) {
		t.Helper()
		a := protocol.Aggregate{Gateway: "gw-1", Seq: seq, Epoch: 7, Provider: "stadtwerk", Account: "a", Meter: "m",
			WindowStart: 1, WindowEnd: 2, Quantity: 1, Amount: 750_000_000, Currency: "EUR", Tickets: 1, MerkleRoot: make([]byte, 32)}
		var enc protocol.Encoder
		b, err := enc.AppendAggregate(nil, &a, s)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post("http://"+addr+"/aggregates", "application/cbor", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("aggregate %d: %s", seq, resp.Status)
		}
	}
	post(1)
	post(3) // 2 is dropped on the way
	waitFor(t, out, "1 aggregates missing so far, first 2")
	// Several ticks with the wallet over its threshold and the gap open.
	time.Sleep(300 * time.Millisecond)
	if strings.Contains(out.String(), "PAYOUT") {
		t.Fatalf("paid across a gap:\n%s", out)
	}
	post(2) // the gap closes
	waitFor(t, out, "PAYOUT stadtwerk #1")
	// The running receiver holds its file: a second command says so.
	if code, _, errOut := farthing(t, nil, "payouts", "list", "--data", filepath.Join(dir, "recv")); code == 0 || !strings.Contains(errOut, "in use") {
		t.Errorf("payouts list beside a running receiver: exit %d, %q", code, errOut)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	got := out.String()
	// 2.25 EUR, a 10% fee of 0.225; 2.02 of the 2.025 left split 70/30 is
	// 141.4 and 60.6 cents: 141 and 61 (the extra cent to the larger
	// remainder), 0.005 carried.
	for _, want := range []string{
		"PAYOUT stadtwerk #1: 2.25 EUR to creator 1.41 EUR, publisher 0.61 EUR, platform fee 0.225 EUR, carried 0.005 EUR (3 aggregates)",
		"wallet stadtwerk: received 2.25 EUR = paid 2.02 EUR + fees 0.225 EUR + carried 0.005 EUR + pending 0.00 EUR: BALANCED",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("receiver output lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "PAYOUT ") != 1 {
		t.Errorf("want one payout:\n%s", got)
	}
}

// The receiver's metrics count payword records and show the aggregates
// whose payword quantity is not proven yet.
func TestReceiverMetricsShowOpenPaywordClaims(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	s, _ := protocol.NewEd25519Signer(priv)
	r, err := provider.Open(filepath.Join(t.TempDir(), "r.db"), provider.Keys(pub))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	srv := httptest.NewServer(receiverOps(r))
	defer srv.Close()
	metric := func(name string) string {
		t.Helper()
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				return v
			}
		}
		t.Fatalf("no %s in\n%s", name, b)
		return ""
	}
	if v := metric("farthing_receiver_payword_claims_open"); v != "0" {
		t.Fatalf("open claims %s on empty books", v)
	}
	a := protocol.Aggregate{Gateway: "gw-1", Seq: 1, Provider: "p", Account: "a", Meter: "m", WindowStart: 1, WindowEnd: 2,
		Quantity: 10, Amount: 100, Currency: "EUR", Tickets: 1, MerkleRoot: make([]byte, 32), Proven: 10}
	var enc protocol.Encoder
	b, err := enc.AppendAggregate(nil, &a, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Accept(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if v := metric("farthing_receiver_payword_claims_open"); v != "1" {
		t.Fatalf("open claims %s after an aggregate with 10 units no record proves", v)
	}
	if v := metric("farthing_receiver_paywords_unproven_total"); v != "0" {
		t.Fatalf("unproven %s", v)
	}
}
