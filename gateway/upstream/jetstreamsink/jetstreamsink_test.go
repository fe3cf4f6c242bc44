package jetstreamsink_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/farthing-iot/farthing/gateway/upstream"
	"github.com/farthing-iot/farthing/gateway/upstream/jetstreamsink"
)

// startJetStream runs nats-server with JetStream on a free loopback port
// until the test ends and returns its URL.
func startJetStream(t *testing.T) string {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nats-server is not installed; scripts/test.sh installs it")
		}
		t.Skip("nats-server is not installed; run scripts/test.sh, which installs it")
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-sd", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for i := 0; i < 100; i++ {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return "nats://" + addr
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("nats-server did not start")
	return ""
}

// The sink makes the stream, publishes on PREFIX.PROVIDER.GATEWAY, and a
// resend with the same idempotency key is one message in the stream.
func TestSinkPublishesOncePerKey(t *testing.T) {
	url := startJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := jetstreamsink.New(ctx, jetstreamsink.Config{URL: url, Create: true, Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := upstream.Outgoing{Seq: 1, Gateway: "gw-1", Provider: "stadtwerk", Key: "0102030405060708.9/1", Bytes: []byte("\xd2agg-1")}
	for range 3 {
		if err := s.Send(ctx, a); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	b := a
	b.Seq, b.Key, b.Bytes = 2, "0102030405060708.9/2", []byte("\xd2agg-2")
	if err := s.Send(ctx, b); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, "FARTHING")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := st.Info(ctx)
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d messages; want 2 (one per key)", info.State.Msgs)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil || m.Subject != "farthing.aggregates.stadtwerk.gw-1" || string(m.Data) != string(a.Bytes) || m.Header.Get("Nats-Msg-Id") != a.Key {
		t.Fatalf("first message %+v, %v", m, err)
	}
}
