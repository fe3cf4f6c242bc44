package devicefw_test

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/farthing-iot/farthing/internal/vectors"
	"github.com/farthing-iot/farthing/protocol"
)

// The C client (devicefw/c) is held to the Go client here: built with gcc
// and clang under AddressSanitizer and UndefinedBehaviorSanitizer, it
// must produce the shared test vectors byte for byte, and read every
// receipt — the vectors, and thousands of random and mutated ones — as
// protocol.ParseReceipt does.

// cHarness is devicefw/c/test/harness.c running, one command a line.
type cHarness struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// cFlags are the flags every host build of the C client takes.
var cFlags = []string{"-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-O1",
	"-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"}

// buildC compiles the C client with srcs (under devicefw/c) by cc with
// extra flags into a program in a temporary directory.
func buildC(t *testing.T, cc string, extra []string, srcs ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), cc+"-prog")
	args := append(append(append([]string{}, cFlags...), extra...), "-o", bin, "c/farthing.c")
	for _, s := range srcs {
		args = append(args, filepath.Join("c", s))
	}
	if out, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", cc, strings.Join(args, " "), err, out)
	}
	return bin
}

func startHarness(t *testing.T, cc string) *cHarness {
	t.Helper()
	bin := buildC(t, cc, []string{"-D_POSIX_C_SOURCE=200809L"}, "test/harness.c")
	h := &cHarness{cmd: exec.Command(bin)}
	h.cmd.Stderr = os.Stderr // a sanitizer's report
	var err error
	if h.in, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.out = bufio.NewScanner(out)
	h.out.Buffer(make([]byte, 64<<10), 64<<10)
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.in.Close()
		if err := h.cmd.Wait(); err != nil {
			t.Errorf("%s harness: %v (a sanitizer's report is above)", cc, err)
		}
	})
	return h
}

// ask sends one command and returns the answer line; sign, when the
// client asks for an Ed25519 signature, makes it.
func (h *cHarness) ask(t *testing.T, line string, sign func([]byte) []byte) string {
	t.Helper()
	fmt.Fprintln(h.in, line)
	for h.out.Scan() {
		ans := h.out.Text()
		tbs, ok := strings.CutPrefix(ans, "sign ")
		if !ok {
			return ans
		}
		msg, _ := hex.DecodeString(tbs)
		fmt.Fprintln(h.in, hex.EncodeToString(sign(msg)))
	}
	t.Fatalf("the harness stopped answering %q: %v", line, h.out.Err())
	return ""
}

// ticketLine is the harness's ticket command for t.
func ticketLine(key string, t *protocol.Ticket) string {
	opt := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ticket %s %s %d %d %d %s %s %d", key, t.Device, t.Seq, t.Time, t.Epoch, opt(t.Account), opt(t.Session), t.Grant)
	for _, r := range t.Readings {
		fmt.Fprintf(&b, " %s %d", r.Meter, r.Register)
	}
	return b.String()
}

// receiptAnswer is what the harness answers for a receipt Go accepted.
func receiptAnswer(r *protocol.Receipt) string {
	opt := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	hb, low := 0, 0
	if r.HasBalance {
		hb = 1
	}
	if r.LowBalance {
		low = 1
	}
	return fmt.Sprintf("ok %d %d %d %d %d %d %s %d %s %d %d %x %s", r.Seq, r.Status, r.Reason, r.Charged, r.Balance, hb, opt(r.Currency),
		r.RetryAfter, opt(r.Voucher), low, r.Time, r.Nonce, r.Device)
}

// goReceipt is what protocol's reader and the HMAC key make of b, as the
// harness would say it.
func goReceipt(b []byte, key *protocol.HMAC) string {
	var env protocol.Envelope
	var r protocol.Receipt
	err := protocol.ParseReceipt(b, &env, &r)
	if err == nil {
		err = env.Verify(key, nil)
	}
	if err != nil {
		return fmt.Sprintf("err %d", protocol.ReasonOf(err))
	}
	return receiptAnswer(&r)
}

// TestCClientVectors: the C client, built with gcc and with clang, makes
// every ticket of the shared vectors byte for byte (HMAC, and Ed25519
// through its signing function) and reads every receipt vector as the Go
// client does: the same fields, or the same reason.
func TestCClientVectors(t *testing.T) {
	f, err := vectors.Load("../protocol/testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := hex.DecodeString(f.Keys["ed25519-seed"])
	priv := ed25519.NewKeyFromSeed(seed)
	sign := func(m []byte) []byte { return ed25519.Sign(priv, m) }
	macKey := f.Keys["hmac"]
	mac, _ := f.Signer("hmac")
	for _, cc := range []string{"gcc", "clang"} {
		t.Run(cc, func(t *testing.T) {
			h := startHarness(t, cc)
			n := 0
			for _, v := range f.Vectors {
				switch {
				case v.Kind == "ticket" && v.Valid:
					key := macKey
					if v.Key == "ed25519" {
						key = "ed:" + hex.EncodeToString(priv.Public().(ed25519.PublicKey))
					}
					if got := h.ask(t, ticketLine(key, v.Ticket), sign); got != v.Hex {
						t.Errorf("%s: C makes %s; the vector is %s", v.Name, got, v.Hex)
					}
					n++
				case v.Kind == "receipt" && v.Key == "hmac":
					want := goReceipt(v.Bytes(), mac.(*protocol.HMAC))
					if got := h.ask(t, "receipt "+macKey+" "+v.Hex, nil); got != want {
						t.Errorf("%s: C reads %q; Go %q", v.Name, got, want)
					}
					n++
				}
			}
			if n < 20 {
				t.Fatalf("only %d vectors checked", n)
			}
		})
	}
}

// TestCClientAgreesWithGo: random tickets are encoded alike by both
// clients; random receipts, and mutations of every receipt vector, are
// accepted alike (with the same fields) or refused alike (with the same
// reason); keys, key ids, paywords and the sequence counter agree.
func TestCClientAgreesWithGo(t *testing.T) {
	h := startHarness(t, "clang")
	rng := rand.New(rand.NewPCG(7, 31))
	master := make([]byte, 32)
	for i := range master {
		master[i] = byte(rng.Uint32())
	}
	tkKey, _ := protocol.DeriveKey(master, protocol.PurposeTicket)
	rcKey, _ := protocol.DeriveKey(master, protocol.PurposeReceipt)
	for _, p := range []protocol.KeyPurpose{protocol.PurposeTicket, protocol.PurposeReceipt, protocol.PurposeDTLSPSK, protocol.PurposeMQTTPassword} {
		want, _ := protocol.DeriveKey(master, p)
		if got := h.ask(t, "derive "+hex.EncodeToString(master)+" "+strings.ReplaceAll(string(p), " ", "+"), nil); got != hex.EncodeToString(want) {
			t.Errorf("derive %q: C %s, Go %x", p, got, want)
		}
	}
	ed := ed25519.NewKeyFromSeed(master)
	for _, k := range []struct {
		alg protocol.Algorithm
		key []byte
	}{{protocol.AlgHMAC256, tkKey}, {protocol.AlgEdDSA, ed.Public().(ed25519.PublicKey)}} {
		want := protocol.KeyIDOf(k.alg, k.key)
		if got := h.ask(t, fmt.Sprintf("kid %d %x", k.alg, k.key), nil); got != hex.EncodeToString(want[:]) {
			t.Errorf("kid of %v: C %s, Go %x", k.alg, got, want)
		}
	}
	tkMAC, _ := protocol.NewHMAC(tkKey)
	edSigner, _ := protocol.NewEd25519Signer(ed)
	sign := func(m []byte) []byte { return ed25519.Sign(ed, m) }
	var enc protocol.Encoder
	for i := 0; i < 300; i++ {
		tk := randomTicket(rng)
		key, s := hex.EncodeToString(tkKey), protocol.Signer(tkMAC)
		if i%5 == 0 {
			key, s = "ed:"+hex.EncodeToString(ed.Public().(ed25519.PublicKey)), edSigner
		}
		want, err := enc.AppendTicket(nil, tk, s)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.ask(t, ticketLine(key, tk), sign); got != hex.EncodeToString(want) {
			t.Fatalf("ticket %+v: C %s, Go %x", tk, got, want)
		}
	}
	checkReceiptsAgree(t, h, rng, rcKey)
	checkPaywordsAndSeqs(t, h, rng)
}

// randomTicket is a valid ticket with random fields.
func randomTicket(rng *rand.Rand) *protocol.Ticket {
	name := func(n int) string {
		const a = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
		b := make([]byte, 1+rng.IntN(n))
		for i := range b {
			b[i] = a[rng.IntN(len(a))]
		}
		return string(b)
	}
	num := func() uint64 { return rng.Uint64() >> rng.IntN(64) }
	tk := &protocol.Ticket{Device: name(64), Seq: max(num()>>1, 1), Time: max(num(), 1)}
	if rng.IntN(3) == 0 {
		tk.Epoch = max(num(), 1)
	}
	for i := range 1 + rng.IntN(protocol.MaxReadings) {
		tk.Readings = append(tk.Readings, protocol.Reading{Meter: fmt.Sprintf("%s%d", name(28), i), Register: num()})
	}
	if rng.IntN(2) == 0 {
		tk.Account = name(64)
	}
	if rng.IntN(3) == 0 {
		tk.Session = name(64)
	}
	if rng.IntN(3) == 0 {
		tk.Grant = max(num()>>1, 1)
	}
	return tk
}

// checkReceiptsAgree runs random receipts, and mutations of them, through
// both readers.
func checkReceiptsAgree(t *testing.T, h *cHarness, rng *rand.Rand, key []byte) {
	mac, _ := protocol.NewHMAC(key)
	var enc protocol.Encoder
	statuses := []protocol.Status{protocol.StatusAccepted, protocol.StatusDuplicate, protocol.StatusRejected, protocol.StatusInsufficientFunds,
		protocol.StatusRetryLater, protocol.StatusHeld}
	accepted, refused := 0, 0
	for i := 0; i < 3000; i++ {
		r := protocol.Receipt{Device: fmt.Sprintf("dev-%d", rng.IntN(1000)), Seq: rng.Uint64() >> 1, Status: statuses[rng.IntN(len(statuses))],
			Charged: rng.Uint64() >> rng.IntN(64), Time: rng.Uint64() >> rng.IntN(64)}
		if rng.IntN(2) == 0 {
			r.Balance, r.HasBalance, r.Currency = int64(rng.Uint64()), true, "EUR"
		}
		switch r.Status {
		case protocol.StatusRejected, protocol.StatusHeld:
			r.Reason = protocol.ReasonRegisterJump
		case protocol.StatusRetryLater:
			r.Reason, r.RetryAfter = protocol.ReasonOverloaded, uint32(1+rng.IntN(60_000))
		}
		r.LowBalance = rng.IntN(4) == 0
		b, err := enc.AppendReceipt(nil, &r, mac)
		if err != nil {
			continue // a combination the rules forbid
		}
		if i%2 == 1 { // a mutation: a byte changed, dropped or added
			switch j := rng.IntN(len(b)); rng.IntN(3) {
			case 0:
				b[j] ^= byte(1 << rng.IntN(8))
			case 1:
				b = append(b[:j:j], b[j+1:]...)
			default:
				b = append(b[:j:j], append([]byte{byte(rng.Uint32())}, b[j:]...)...)
			}
		}
		want := goReceipt(b, mac)
		if got := h.ask(t, fmt.Sprintf("receipt %x %x", key, b), nil); got != want {
			t.Fatalf("receipt %x: C reads %q; Go %q", b, got, want)
		}
		if strings.HasPrefix(want, "ok") {
			accepted++
		} else {
			refused++
		}
	}
	t.Logf("receipts read alike: %d accepted, %d refused", accepted, refused)
	if accepted < 500 || refused < 500 {
		t.Fatalf("too few of one kind: %d accepted, %d refused", accepted, refused)
	}
}

// checkPaywordsAndSeqs: payword hashes and tickets, and the sequence
// counter across reboots.
func checkPaywordsAndSeqs(t *testing.T, h *cHarness, rng *rand.Rand) {
	var chain protocol.ChainID
	var w protocol.Payword
	for i := range chain {
		chain[i] = byte(rng.Uint32())
	}
	for i := range w {
		w[i] = byte(rng.Uint32())
	}
	next := protocol.PaywordStep(&chain, &w)
	if got := h.ask(t, fmt.Sprintf("step %x %x", chain, w), nil); got != hex.EncodeToString(next[:]) {
		t.Errorf("payword step: C %s, Go %x", got, next)
	}
	pt := protocol.PaywordTicket{Device: "plug-7", Chain: chain, Index: 4242, Word: w}
	want, _ := protocol.AppendPaywordTicket(nil, &pt)
	if got := h.ask(t, fmt.Sprintf("payword plug-7 %x 4242 %x", chain, w), nil); got != hex.EncodeToString(want) {
		t.Errorf("payword ticket: C %s, Go %x", got, want)
	}
	// A boot with nothing in flash reserves 1..100; 150 seqs write twice;
	// after a power loss the counter resumes at what flash says (201).
	got := h.ask(t, "seq 0 150", nil)
	if !strings.HasPrefix(got, "1 2 3 ") || !strings.HasSuffix(got, "149 150 saved 201 2") {
		t.Errorf("seq from a blank flash: %s", got)
	}
	if got := h.ask(t, "seq 201 2", nil); got != "201 202 saved 301 1" {
		t.Errorf("seq after a reboot: %s", got)
	}
}

// TestCClientFuzzReceipts runs the libFuzzer target of the receipt
// parser (clang, with AddressSanitizer and UndefinedBehaviorSanitizer)
// for a bounded count over the committed corpus.
func TestCClientFuzzReceipts(t *testing.T) {
	bin := buildC(t, "clang", []string{"-fsanitize=fuzzer"}, "test/fuzz_receipt.c")
	corpus := t.TempDir()
	seeds, _ := filepath.Glob("c/testdata/fuzz-receipt/*")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		os.WriteFile(filepath.Join(corpus, filepath.Base(s)), b, 0o600)
	}
	if len(seeds) < 10 {
		t.Fatalf("only %d seeds in c/testdata/fuzz-receipt", len(seeds))
	}
	out, err := exec.Command(bin, "-runs=200000", "-max_len=512", "-seed=1", corpus).CombinedOutput()
	if err != nil {
		t.Fatalf("libFuzzer: %v\n%s", err, out)
	}
	if m := regexp.MustCompile(`Done (\d+) runs`).FindSubmatch(out); m != nil {
		t.Logf("libFuzzer: %s runs of the receipt parser, no finding", m[1])
	}
}

// TestCClientSizes cross-compiles the C client for Cortex-M0+ and M4
// (arm-none-eabi-gcc -Os) and holds its text to 6 KB.
func TestCClientSizes(t *testing.T) {
	for _, cpu := range []string{"cortex-m0plus", "cortex-m4"} {
		obj := filepath.Join(t.TempDir(), cpu+".o")
		args := []string{"-std=c99", "-Os", "-mcpu=" + cpu, "-mthumb", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-c", "c/farthing.c", "-o", obj}
		if out, err := exec.Command("arm-none-eabi-gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("arm-none-eabi-gcc: %v\n%s", err, out)
		}
		out, err := exec.Command("arm-none-eabi-size", obj).Output()
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(bytes.Split(bytes.TrimSpace(out), []byte("\n"))[1]))
		text, _ := strconv.Atoi(f[0])
		t.Logf("C client on %s: text %s data %s bss %s bytes", cpu, f[0], f[1], f[2])
		if text > 6*1024 {
			t.Errorf("the C client's text on %s is %d bytes, over 6 KB", cpu, text)
		}
	}
}
