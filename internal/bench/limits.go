package bench

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// VerifyLimit is L1: Ed25519 ticket verifications per second on every core
// (the gateway's cores when pinning),
// on ticket bytes like the load's: the gateway's whole check (strict decode
// and signature), nothing else.
func VerifyLimit(d time.Duration) (float64, error) {
	seed := make([]byte, 32)
	priv := ed25519.NewKeyFromSeed(seed)
	s, _ := protocol.NewEd25519Signer(priv)
	v, _ := protocol.NewEd25519Verifier(priv.Public().(ed25519.PublicKey))
	var enc protocol.Encoder
	ticket, err := enc.AppendTicket(nil, &protocol.Ticket{Device: "bench-0001", Seq: 1, Time: uint64(time.Now().UnixMilli()),
		Readings: []protocol.Reading{{Meter: "energy_wh", Register: 12345}}}, s)
	if err != nil {
		return 0, err
	}
	var n atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := 0; w < verifyWorkers(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var scratch [protocol.MaxTicketSize + 64]byte
			for time.Now().Before(stop) {
				for i := 0; i < 64; i++ {
					env, _, err := strict.DecodeTicket(ticket)
					if err == nil {
						err = env.Verify(v, scratch[:0])
					}
					if err != nil {
						panic(err)
					}
				}
				n.Add(64)
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// BareBroker is a mochi broker with nothing of Farthing in it, for L2.
func BareBroker(addr string) (func(), error) {
	srv := mochi.New(&mochi.Options{InlineClient: false, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})); err != nil {
		return nil, err
	}
	if err := srv.Serve(); err != nil {
		return nil, err
	}
	return func() { srv.Close() }, nil
}

// BrokerLimit is L2: small QoS 1 messages per second from paho publishers
// through the broker at addr to one paho subscriber that does nothing.
func BrokerLimit(ctx context.Context, addr string, d time.Duration) (float64, error) {
	var got atomic.Int64
	sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("l2-sub-%d", time.Now().UnixNano())).
		SetOrderMatters(false).SetMessageChannelDepth(10000))
	if t := sub.Connect(); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return 0, fmt.Errorf("L2 subscriber: %v", t.Error())
	}
	defer sub.Disconnect(100)
	if t := sub.Subscribe("l2/#", 1, func(paho.Client, paho.Message) { got.Add(1) }); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return 0, fmt.Errorf("L2 subscribe: %v", t.Error())
	}
	payload := make([]byte, 120) // about a ticket
	const publishers, window = 8, 250
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for p := 0; p < publishers; p++ {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("l2-pub-%d-%d", p, time.Now().UnixNano())))
		if t := c.Connect(); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
			return 0, fmt.Errorf("L2 publisher: %v", t.Error())
		}
		defer c.Disconnect(100)
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("l2/%d", p)
			for time.Now().Before(stop) && ctx.Err() == nil {
				toks := make([]paho.Token, 0, window)
				for i := 0; i < window; i++ {
					toks = append(toks, c.Publish(topic, 1, false, payload))
				}
				for _, t := range toks {
					t.WaitTimeout(5 * time.Second)
				}
			}
		}()
	}
	start := time.Now()
	base := got.Load()
	wg.Wait()
	time.Sleep(200 * time.Millisecond)
	return float64(got.Load()-base) / time.Since(start).Seconds(), nil
}
