package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/coaps"
	"github.com/farthing-iot/farthing/gateway/entrance"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/protocol"
)

// coapLimit is L3: CoAP requests over DTLS per second through a bare
// server — the gateway's own door (pion/dtls and go-coap with its
// listener's limits), answering every POST at once with a body of a
// receipt's size and no gateway work behind it — from the same fleet and
// simulator as E's CoAP figure (HMAC devices, one DTLS session each, one
// request out at a time).
func coapLimit(ctx context.Context, o Options, data string, d time.Duration) (float64, error) {
	addr := freeAddr("udp")
	stop, err := bareCoAP(ctx, data, addr)
	if err != nil {
		return 0, err
	}
	defer stop()
	r, busy, wall, err := runSim(ctx, o, data, "hmac", "coaps", addr, o.Offered, d, true)
	if err != nil {
		return 0, fmt.Errorf("L3: %w", err)
	}
	if r.Missing > 0 {
		return 0, fmt.Errorf("L3: %d requests unanswered", r.Missing)
	}
	fmt.Fprintf(o.Out, "bench: L3 run: %.0f requests/s, server at %.2f cores\n", r.Throughput, busy.Seconds()/max(wall.Seconds(), 1e-9))
	return r.Throughput, nil
}

// bareCoAP serves the CoAP-over-DTLS door on addr with the PSKs of data's
// registry and nothing behind it.
func bareCoAP(ctx context.Context, data, addr string) (func(), error) {
	rf, err := registry.ReadFile(filepath.Join(data, "devices.yaml"))
	if err != nil {
		return nil, err
	}
	psk := map[string][]byte{}
	for _, e := range rf.Devices {
		if e.KeyType != "hmac" {
			continue
		}
		s, err := registry.SecretsOf(e)
		if err != nil {
			return nil, err
		}
		psk[e.ID] = s.DTLSPSK()
	}
	answer := make([]byte, 96) // about a receipt
	srv, err := coaps.Listen(coaps.Config{Listen: addr,
		Handle: func(context.Context, entrance.Message) entrance.Reply {
			return func() entrance.Answer { return entrance.Answer{Receipt: answer, Status: protocol.StatusAccepted} }
		},
		PSK:    func(id string) ([]byte, bool) { k, ok := psk[id]; return k, ok },
		Limits: coaps.Limits{HandshakeRate: 1e6, HandshakeBurst: 1e6, MaxSessions: 1 << 20},
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(sctx) }()
	return func() { cancel(); wg.Wait() }, nil
}

// dtlsMemoryScenario starts a gateway over a registry of registered
// devices with its DTLS listener, reads its memory, then opens sessions
// idle DTLS sessions (each device sends one ticket and stays) and reads it
// again.
func dtlsMemoryScenario(ctx context.Context, data string, registered, sessions int) (Memory, error) {
	m := Memory{Name: "CoAP/DTLS sessions", Registered: registered, Connected: sessions}
	addr := freeAddr("udp")
	stop, err := startGateway(ctx, data, "gw-bench-dtls", func(c *gateway.Config) {
		c.MQTT.Listen, c.DTLS.Listen = freeAddr("tcp"), addr
	})
	if err != nil {
		return m, err
	}
	defer stop()
	debug.FreeOSMemory()
	m.IdleRSSMB, _ = memStatus("self")
	exe, err := os.Executable()
	if err != nil {
		return m, err
	}
	const hold = 6 * time.Second
	cmd := command(ctx, exe, "sim", "--data", data, "--type", "hmac", "--devices", strconv.Itoa(sessions), "--transport", "coaps",
		"--coap", addr, "--rate", strconv.Itoa(sessions), "--duration", "1s", "--inflight", "1", "--hold", hold.String(), "--json")
	return m, holdAndSample(cmd, &m, hold, "")
}
