package operator

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/protocol"
)

// SettleRequest is the body of a release or a void of a held ticket.
type SettleRequest struct {
	// Note says why (required for a void): 1..64 bytes of printable ASCII.
	// It goes to the audit log and upstream.
	Note string `json:"note"`
}

// quarantineRoutes serves the held tickets on the operator API:
//
//	GET  /holds?state=S&device=D           held tickets (ledger.Held), all or by state and device
//	GET  /holds/{device}/{seq}             one
//	POST /holds/{device}/{seq}/release     charge its usage now (SettleRequest → ledger.Held)
//	POST /holds/{device}/{seq}/void        discard it, with a note saying why
//
// Both actions are idempotent (a repeat answers the hold with repeated
// true) and refused (409) when the hold was settled the other way; a
// release the account cannot pay is refused (409) with nothing done.
func (a *API) quarantineRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /holds", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		switch q.Get("state") {
		case "", protocol.HoldHeld, protocol.HoldReleased, protocol.HoldVoided:
		default:
			http.Error(w, "state: want held, released or voided", http.StatusBadRequest)
			return
		}
		v, err := a.ingest.Books().Holds(q.Get("state"), q.Get("device"))
		holdAnswer(w, a, v, err)
	})
	m.HandleFunc("GET /holds/{device}/{seq}", func(w http.ResponseWriter, r *http.Request) {
		seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
		if err != nil {
			http.Error(w, "seq: want a number", http.StatusBadRequest)
			return
		}
		v, err := a.ingest.Books().Hold(r.PathValue("device"), seq)
		holdAnswer(w, a, v, err)
	})
	for _, action := range []string{"release", "void"} {
		m.HandleFunc("POST /holds/{device}/{seq}/"+action, func(w http.ResponseWriter, r *http.Request) {
			seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
			if err != nil {
				http.Error(w, "seq: want a number", http.StatusBadRequest)
				return
			}
			var req SettleRequest
			dec := json.NewDecoder(io.LimitReader(r.Body, 4<<10))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
				http.Error(w, "want {\"note\": \"…\"}: "+err.Error(), http.StatusBadRequest)
				return
			}
			books, terms, dev := a.ingest.Books(), &a.ingest.Snapshot().Terms, r.PathValue("device")
			settle := books.Release
			if action == "void" {
				settle = books.Void
			}
			v, err := settle(r.Context(), terms, ledger.HoldSettlement{Device: dev, Seq: seq, Note: req.Note, Credential: CredentialOf(r)})
			if err == nil {
				if !v.Repeated {
					a.metrics.Transport.WithLabelValues("operator", action).Inc()
				}
				a.log.Warn("held ticket "+v.State, "device", dev, "seq", seq, "rule", v.Rule, "charged_nanos", v.Charged,
					"note", v.Note, "repeated", v.Repeated, "credential", CredentialOf(r))
			}
			holdAnswer(w, a, v, err)
		})
	}
}

// holdAnswer writes v as JSON, or err with its status: 404 for no such
// hold, 409 for a hold settled the other way or a release that cannot be
// charged, 503 for anything else (the store).
func holdAnswer(w http.ResponseWriter, a *API, v any, err error) {
	switch {
	case errors.Is(err, ledger.ErrNoHold):
		http.Error(w, err.Error(), http.StatusNotFound)
	case errors.Is(err, ledger.ErrHoldSettled), errors.Is(err, ledger.ErrReleaseRefused):
		http.Error(w, err.Error(), http.StatusConflict)
	default:
		answer(w, a, v, err)
	}
}
