package operator

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/metering"
)

// TopUpRequest is the body of POST /accounts/{id}/topups.
type TopUpRequest struct {
	// Amount is a decimal with its currency, e.g. "5.00 EUR".
	Amount string `json:"amount"`
	// Ref is the caller's reference (a payment id): the same ref again is
	// the same top-up; with another amount or account it is refused.
	Ref string `json:"ref"`
}

// AdjustRequest is the body of POST /accounts/{id}/adjustments.
type AdjustRequest struct {
	// Amount is a signed decimal with its currency: "-20.00 EUR" debits,
	// "5.00 EUR" credits.
	Amount string `json:"amount"`
	// Ref is the caller's reference: the same ref again is the same
	// adjustment; with another account, amount or reason it is refused.
	Ref string `json:"ref"`
	// Reason is a code: double_redemption, goodwill, correction, …
	Reason string `json:"reason"`
	// Note is the operator's words, kept in the audit log.
	Note string `json:"note,omitempty"`
	// Voucher is the voucher the adjustment settles (one credited twice).
	Voucher string `json:"voucher,omitempty"`
}

// accountRoutes serves the accounts on the operator API:
//
//	GET  /accounts                      every account (ledger.AccountView)
//	GET  /accounts/{id}                 one account
//	GET  /accounts/{id}/entries?since=T its ledger entries (T: RFC 3339 or Unix ms)
//	GET  /accounts/{id}/periods         its entries folded by UTC day once pruned (ledger.FoldedDay)
//	POST /accounts/{id}/topups          a top-up (TopUpRequest → ledger.TopUpResult), idempotent by ref
//	POST /accounts/{id}/adjustments     an adjustment (AdjustRequest → ledger.TopUpResult), idempotent by ref
//	GET  /audit                         the operator operations recorded
//
// A top-up or an adjustment is committed with fsync before it is
// answered, and recorded in the audit log with the credential that made
// it.
func (a *API) accountRoutes(m *http.ServeMux) {
	terms := func() *ledger.Terms { return &a.ingest.Snapshot().Terms }
	m.HandleFunc("GET /accounts", func(w http.ResponseWriter, _ *http.Request) {
		v, err := a.ingest.Books().Accounts(terms())
		answer(w, a, v, err)
	})
	m.HandleFunc("GET /accounts/{id}", func(w http.ResponseWriter, r *http.Request) {
		v, err := a.ingest.Books().Account(terms(), r.PathValue("id"))
		answer(w, a, v, err)
	})
	m.HandleFunc("GET /accounts/{id}/entries", func(w http.ResponseWriter, r *http.Request) {
		since, err := parseSince(r.URL.Query().Get("since"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if _, err := a.ingest.Books().Account(terms(), r.PathValue("id")); err != nil {
			answer(w, a, nil, err)
			return
		}
		v, err := a.ingest.Books().AccountEntries(r.PathValue("id"), since)
		if v == nil {
			v = []metering.Entry{}
		}
		answer(w, a, v, err)
	})
	m.HandleFunc("GET /accounts/{id}/periods", func(w http.ResponseWriter, r *http.Request) {
		if _, err := a.ingest.Books().Account(terms(), r.PathValue("id")); err != nil {
			answer(w, a, nil, err)
			return
		}
		v, err := a.ingest.Books().FoldedDays(r.PathValue("id"))
		answer(w, a, v, err)
	})
	m.HandleFunc("POST /accounts/{id}/topups", func(w http.ResponseWriter, r *http.Request) {
		var req TopUpRequest
		if !decodeBody(w, r, 4<<10, &req, "want {\"amount\": \"5.00 EUR\", \"ref\": \"…\"}") {
			return
		}
		amount, err := metering.ParseMoney(req.Amount)
		if err != nil {
			http.Error(w, "amount: "+err.Error(), http.StatusBadRequest)
			return
		}
		res, err := a.ingest.Books().TopUp(r.Context(), terms(), r.PathValue("id"), amount, ledger.Request{Ref: req.Ref, Credential: CredentialOf(r)})
		if err == nil {
			a.metrics.Transport.WithLabelValues("operator", "top_up").Inc()
			a.log.Info("top-up", "account", r.PathValue("id"), "amount", amount.String(), "ref", req.Ref,
				"repeated", res.Repeated, "credential", CredentialOf(r))
		}
		answer(w, a, res, err)
	})
	m.HandleFunc("POST /accounts/{id}/adjustments", func(w http.ResponseWriter, r *http.Request) { a.adjust(w, r, terms()) })
	m.HandleFunc("GET /audit", func(w http.ResponseWriter, _ *http.Request) {
		v, err := a.ingest.Books().AuditLog()
		if v == nil {
			v = []ledger.Operation{}
		}
		answer(w, a, v, err)
	})
}

// adjust serves POST /accounts/{id}/adjustments (see accountRoutes).
func (a *API) adjust(w http.ResponseWriter, r *http.Request, terms *ledger.Terms) {
	var req AdjustRequest
	if !decodeBody(w, r, 4<<10, &req, "want {\"amount\": \"-20.00 EUR\", \"ref\": \"…\", \"reason\": \"…\", \"note\": \"…\"}") {
		return
	}
	amount, err := metering.ParseMoney(req.Amount)
	if err != nil {
		http.Error(w, "amount: "+err.Error(), http.StatusBadRequest)
		return
	}
	adj := ledger.Adjustment{Amount: amount, Reason: req.Reason, Note: req.Note, Voucher: req.Voucher}
	res, err := a.ingest.Books().Adjust(r.Context(), terms, r.PathValue("id"), adj, ledger.Request{Ref: req.Ref, Credential: CredentialOf(r)})
	if err == nil {
		a.metrics.Transport.WithLabelValues("operator", "adjustment").Inc()
		a.log.Warn("account adjusted", "account", r.PathValue("id"), "amount", amount.String(), "reason", req.Reason, "voucher", req.Voucher,
			"ref", req.Ref, "repeated", res.Repeated, "credential", CredentialOf(r))
	}
	answer(w, a, res, err)
}

// answer writes v as JSON, or err with its status: 404 for an unknown
// account, 409 for a reference used for another operation, 400 for a bad
// top-up, 503 for anything else (the store).
func answer(w http.ResponseWriter, a *API, v any, err error) {
	switch {
	case err == nil:
		writeJSON(w, a.log, v)
	case errors.Is(err, ledger.ErrUnknownAccount):
		http.Error(w, err.Error(), http.StatusNotFound)
	case errors.Is(err, ledger.ErrRefConflict):
		http.Error(w, err.Error(), http.StatusConflict)
	case errors.Is(err, ledger.ErrBadTopUp), errors.Is(err, ledger.ErrBadAdjustment):
		http.Error(w, err.Error(), http.StatusBadRequest)
	default:
		a.log.Error("operator API: books unavailable", "error", err)
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	}
}

// parseSince reads RFC 3339 or Unix milliseconds; "" is the beginning.
func parseSince(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return 0, errors.New("since: want RFC 3339 (2026-11-30T00:00:00Z) or Unix milliseconds")
	}
	return t.UnixMilli(), nil
}
