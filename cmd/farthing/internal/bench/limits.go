package bench

import (
	"context"
	"crypto/ed25519"
	"errors"
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
// (the gateway's cores when pinning), the way the gateway verifies under
// load: each ticket strictly decoded and its signed structure built, the
// signatures checked in batches of 64 (strict.Ed25519Batch, as the
// gateway's batcher does), from 64 devices with keys of their own.
func VerifyLimit(d time.Duration) (float64, error) {
	const devices = 64
	type ticket struct {
		b   []byte
		pub ed25519.PublicKey
	}
	tickets := make([]ticket, devices)
	var enc protocol.Encoder
	for i := range tickets {
		seed := make([]byte, 32)
		seed[0] = byte(i)
		priv := ed25519.NewKeyFromSeed(seed)
		s, _ := protocol.NewEd25519Signer(priv)
		b, err := enc.AppendTicket(nil, &protocol.Ticket{Device: fmt.Sprintf("bench-%04d", i), Seq: 1, Time: uint64(time.Now().UnixMilli()),
			Readings: []protocol.Reading{{Meter: "energy_wh", Register: 12345}}}, s)
		if err != nil {
			return 0, err
		}
		tickets[i] = ticket{b, priv.Public().(ed25519.PublicKey)}
	}
	var n atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for w := 0; w < verifyWorkers(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var batch strict.Ed25519Batch
			var ok [devices]bool
			scratch := make([][]byte, devices)
			for i := range scratch {
				scratch[i] = make([]byte, 0, protocol.MaxTicketSize+64)
			}
			for time.Now().Before(stop) {
				for i, t := range tickets {
					env, _, err := strict.DecodeTicket(t.b)
					if err != nil {
						failed.Store(true)
						return
					}
					scratch[i] = protocol.AppendToBeSigned(scratch[i][:0], env.Alg, env.Protected, env.Payload)
					batch.Add(t.pub, scratch[i], env.Signature)
				}
				if batch.Verify(ok[:]) != devices {
					failed.Store(true)
					return
				}
				n.Add(devices)
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	if failed.Load() {
		return 0, errors.New("L1: a ticket did not verify")
	}
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
