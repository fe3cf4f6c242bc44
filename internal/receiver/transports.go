package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/farthing-iot/farthing/protocol"
)

// Handler serves POST /aggregates (an aggregate; 200 once booked, also
// for a duplicate; 400/403 for a refusal) and GET /totals.
func (r *Receiver) Handler(log *slog.Logger) http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("POST /aggregates", func(w http.ResponseWriter, req *http.Request) {
		b, err := io.ReadAll(io.LimitReader(req.Body, protocol.MaxAggregateSize+1))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out, a, err := r.Accept(b)
		switch {
		case errors.Is(err, ErrUntrusted):
			http.Error(w, err.Error(), http.StatusForbidden)
		case errors.Is(err, ErrInvalid):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		default:
			if out == Duplicate {
				fmt.Fprintf(w, "duplicate %s/%d\n", a.Gateway, a.Seq)
				return
			}
			fmt.Fprintf(w, "accepted %s/%d\n", a.Gateway, a.Seq)
		}
		if err != nil {
			log.Warn("aggregate refused", "key", req.Header.Get("Idempotency-Key"), "error", err)
		}
	})
	m.HandleFunc("GET /totals", func(w http.ResponseWriter, _ *http.Request) {
		rep, err := r.Report()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(rep)
	})
	return m
}

// RunMQTT subscribes to filter (default farthing/v1/aggregates/#) with a
// persistent session and books what arrives until ctx ends; a message is
// acknowledged once booked (or refused for good).
func (r *Receiver) RunMQTT(ctx context.Context, broker, clientID, filter, user, password string, log *slog.Logger) error {
	if filter == "" {
		filter = "farthing/v1/aggregates/#"
	}
	handle := func(_ paho.Client, m paho.Message) {
		_, _, err := r.Accept(m.Payload())
		if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUntrusted) {
			log.Error("aggregate not booked; it will come again", "error", err)
			return
		}
		if err != nil {
			log.Warn("aggregate refused", "topic", m.Topic(), "error", err)
		}
		m.Ack()
	}
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).SetUsername(user).SetPassword(password).
		SetCleanSession(false).SetAutoAckDisabled(true).SetOrderMatters(true).SetAutoReconnect(true).
		SetConnectRetry(true).SetConnectRetryInterval(time.Second)
	opts.SetOnConnectHandler(func(c paho.Client) { c.Subscribe(filter, 1, handle) })
	c := paho.NewClient(opts)
	c.Connect()
	<-ctx.Done()
	c.Disconnect(250)
	return nil
}

// RunJetStream books aggregates from a durable pull consumer on stream
// until ctx ends. Several receivers on the same durable share the work;
// each message is acknowledged once booked, so a receiver that dies leaves
// its messages to the others.
func (r *Receiver) RunJetStream(ctx context.Context, url, stream, durable string, log *slog.Logger) error {
	nc, err := nats.Connect(url, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var cons jetstream.Consumer
	for {
		cons, err = js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: durable,
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 1000})
		if err == nil {
			break
		}
		log.Warn("waiting for the stream", "stream", stream, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_, _, err := r.Accept(m.Data())
		switch {
		case err == nil:
			m.Ack()
		case errors.Is(err, ErrInvalid), errors.Is(err, ErrUntrusted):
			log.Warn("aggregate refused", "subject", m.Subject(), "error", err)
			m.Term()
		default:
			log.Error("aggregate not booked; it will come again", "error", err)
			m.Nak()
		}
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}
