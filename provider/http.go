package provider

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// ReadAccess says who may read the books over a receiver's HTTP
// listener. Posting aggregates needs no credential: only an aggregate
// signed by a trusted gateway key is booked. Reading them (GET /totals:
// every account's money) does.
type ReadAccess struct {
	// Token, if set (not all zero), is the SHA-256 of the read token: a
	// request carrying "Authorization: Bearer TOKEN" reads. Without it
	// every read on this listener is refused; a listener of its own
	// (ReadHandler) is the other way to give reads.
	Token [sha256.Size]byte
}

// Handler serves POST /aggregates (an aggregate; 200 once booked, also
// for a duplicate; 400/403 for a refusal; 409 for a conflict or a wrong
// gateway, held in the file) and GET /totals (the Report) to a request
// with the read token; without it GET /totals is 401, counted in
// Stats.ReadsRefused and logged. A nil log discards.
func (r *Receiver) Handler(log *slog.Logger, reads ReadAccess) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := http.NewServeMux()
	m.HandleFunc("POST /aggregates", func(w http.ResponseWriter, req *http.Request) {
		b, err := io.ReadAll(io.LimitReader(req.Body, protocol.MaxMessageSize+1))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		bk, err := r.Accept(req.Context(), b)
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
		LogOutcome(log, "key", req.Header.Get("Idempotency-Key"), bk, err)
	})
	totals := r.ReadHandler()
	m.HandleFunc("GET /totals", func(w http.ResponseWriter, req *http.Request) {
		if !reads.allows(req) {
			r.mu.Lock()
			r.stats.ReadsRefused++
			r.mu.Unlock()
			log.Warn("read of the books refused: no read token", "remote", req.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="farthing-receiver"`)
			http.Error(w, "reading the books needs the receiver's read token (Authorization: Bearer), or its read listener", http.StatusUnauthorized)
			return
		}
		totals.ServeHTTP(w, req)
	})
	return m
}

// allows reports whether req carries the read token (compared in
// constant time).
func (a ReadAccess) allows(req *http.Request) bool {
	got, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(got))
	return ok && a.Token != [sha256.Size]byte{} && subtle.ConstantTimeCompare(sum[:], a.Token[:]) == 1
}

// ReadHandler serves GET /totals (the Report) with no credential: for a
// listener of its own that only those who may read the books reach
// (loopback, a management network).
func (r *Receiver) ReadHandler() http.Handler {
	m := http.NewServeMux()
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

// LogOutcome writes the log line of a record that was not plainly booked
// (where/what name it: "topic", the topic): a conflict or a wrong gateway
// at error level (money held, an operator must look), a refusal at warn,
// a storage failure at error, a stream reset at warn. Every transport of
// the receiver logs through it.
func LogOutcome(log *slog.Logger, where, what string, bk Booking, err error) {
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
	case bk.Restored != nil:
		var money []string
		for _, m := range bk.Restored.Money {
			money = append(money, fmt.Sprintf("%s %s/%s %d×: %s (paid out already: %s)", m.Kind, m.Provider, m.Account, m.Count,
				metering.Money{Nanos: metering.Nanos(m.Amount), Currency: metering.Currency(m.Currency)},
				metering.Money{Nanos: metering.Nanos(m.Paid), Currency: metering.Currency(m.Currency)}))
		}
		log.Warn("gateway restored from a backup: what its replaced stream numbered after the backup is superseded_by_restore, out of the payable books",
			where, what, "gateway", bk.Gateway(), "stream", bk.Stream.String(), "superseded_stream", bk.Restored.Superseded.String(),
			"after_seq", bk.Restored.After, "superseded", strings.Join(money, "; "))
	case bk.Superseded != nil:
		log.Warn("record of a stream superseded by a restore: booked as superseded_by_restore, not payable", where, what,
			"stream", bk.Stream.Key(bk.Seq()), "kind", bk.Superseded.Kind, "account", bk.Superseded.Account, "amount_nanos", bk.Superseded.Amount)
	case bk.Ack != nil && bk.Ack.Local:
		log.Warn("a gateway's operator changed it by hand (a local override)", where, what, "gateway", bk.Ack.Gateway,
			"change", bk.Ack.Command, "action", bk.Ack.Action)
	case bk.Ack != nil && bk.Ack.Refused:
		log.Warn("a gateway refused a command", where, what, "gateway", bk.Ack.Gateway, "command", bk.Ack.Command,
			"target", bk.Ack.Target, "seq", bk.Ack.Number, "reason", bk.Ack.Reason.String())
	case bk.ResetFrom != nil:
		log.Warn("aggregate stream reset: the gateway started a new state file", where, what, "gateway", bk.Gateway(),
			"stream", bk.Stream.String(), "previous_epoch", fmt.Sprintf("%x", bk.ResetFrom.Epoch), "previous_last_seq", bk.ResetFrom.LastSeq)
	}
}
