package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/farthing-iot/farthing/protocol"
)

// Handler serves POST /aggregates (an aggregate; 200 once booked, also
// for a duplicate; 400/403 for a refusal; 409 for a conflict or a wrong
// gateway, held in the file) and GET /totals (the Report).
func (r *Receiver) Handler(log *slog.Logger) http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("POST /aggregates", func(w http.ResponseWriter, req *http.Request) {
		b, err := io.ReadAll(io.LimitReader(req.Body, protocol.MaxMessageSize+1))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		bk, err := r.Accept(b)
		switch {
		case errors.Is(err, ErrConflict), errors.Is(err, ErrWrongGateway):
			http.Error(w, err.Error(), http.StatusConflict)
		case errors.Is(err, ErrUntrusted):
			http.Error(w, err.Error(), http.StatusForbidden)
		case errors.Is(err, ErrInvalid):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		default:
			if bk.Outcome == Duplicate {
				fmt.Fprintf(w, "duplicate %s\n", bk.Stream.Key(bk.Seq()))
				return
			}
			fmt.Fprintf(w, "accepted %s\n", bk.Stream.Key(bk.Seq()))
		}
		logOutcome(log, "key", req.Header.Get("Idempotency-Key"), bk, err)
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
		filter = protocol.Topics{}.AggregateFilter()
	}
	handle := func(_ paho.Client, m paho.Message) {
		bk, err := r.Accept(m.Payload())
		logOutcome(log, "topic", m.Topic(), bk, err)
		if err != nil && !Refused(err) {
			return // not acknowledged: it comes again
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
	// While the books cannot commit (a database that is down), nothing is
	// acknowledged: each message comes back after a delay that doubles
	// from 100 ms to 10 s, so a down database is not hammered.
	var failing atomic.Int64
	cc, err := cons.Consume(func(m jetstream.Msg) {
		bk, err := r.Accept(m.Data())
		logOutcome(log, "subject", m.Subject(), bk, err)
		switch {
		case err == nil:
			m.Ack()
			failing.Store(0)
		case Refused(err):
			m.Term() // a refusal is final; a held aggregate is kept in the books
			failing.Store(0)
		default:
			n := failing.Add(1)
			m.NakWithDelay(min(100*time.Millisecond<<min(n, 7), 10*time.Second))
		}
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}

// logOutcome writes the log line of an aggregate that was not plainly
// booked: a conflict or a wrong gateway at error level (money held, an
// operator must look), a refusal at warn, a storage failure at error, a
// stream reset at warn.
func logOutcome(log *slog.Logger, where, what string, bk Booking, err error) {
	switch {
	case errors.Is(err, ErrConflict), errors.Is(err, ErrWrongGateway):
		log.Error("aggregate held, not booked", where, what, "amount_nanos", bk.Amount(), "error", err)
	case Refused(err):
		log.Warn("aggregate refused", where, what, "error", err)
	case err != nil:
		log.Error("aggregate not booked; it will come again", where, what, "error", err)
	case bk.Outcome == PaywordUnproven:
		log.Error("chain progress record held: its paywords do not prove its usage", where, what, "gateway", bk.Gateway(),
			"stream", bk.Stream.Key(bk.Seq()), "device", bk.Payword.Device, "why", bk.Unproven)
	case bk.DoubleRedemption != "":
		log.Error("voucher credited twice: booked, and flagged", where, what, "voucher", bk.Credit.Ref, "account", bk.Credit.Account,
			"amount_nanos", bk.Credit.Amount, "stream", bk.Stream.Key(bk.Seq()), "first", bk.DoubleRedemption)
	case bk.ResetFrom != nil:
		log.Warn("aggregate stream reset: the gateway started a new state file", where, what, "gateway", bk.Gateway(),
			"stream", bk.Stream.String(), "previous_epoch", fmt.Sprintf("%x", bk.ResetFrom.Epoch), "previous_last_seq", bk.ResetFrom.LastSeq)
	}
}
