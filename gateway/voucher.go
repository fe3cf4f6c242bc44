package gateway

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// loadIssuers reads the voucher issuers' public keys.
func loadIssuers(files []string) (map[string]*strict.Ed25519Verifier, error) {
	out := map[string]*strict.Ed25519Verifier{}
	for i, f := range files {
		k, err := keyfile.Load(f)
		if err != nil {
			return nil, fmt.Errorf("%w: voucher_issuers[%d]: %v", ErrConfig, i, err)
		}
		pub := k.Public
		if k.Private != nil {
			pub = k.Private.Public().(ed25519.PublicKey)
		}
		if pub == nil {
			return nil, fmt.Errorf("%w: voucher_issuers[%d]: %s is not an Ed25519 key", ErrConfig, i, f)
		}
		v, err := strict.NewEd25519Verifier(pub)
		if err != nil {
			return nil, err
		}
		out[string(v.KeyID())] = v
	}
	return out, nil
}

// RedeemVoucher checks a voucher's bytes against the trusted issuers and
// redeems it (ledger.Books.Redeem). forAccount, if set, is the account of
// the device that passed it on. Every outcome is counted and logged; a
// refusal is a *ledger.Refusal with its reason.
func (g *Gateway) RedeemVoucher(ctx context.Context, raw []byte, forAccount, credential string) (ledger.RedeemResult, error) {
	res, err := g.redeem(ctx, raw, forAccount, credential)
	var rf *ledger.Refusal
	switch {
	case err == nil:
		g.metrics.Transport.WithLabelValues("voucher", "redeemed").Inc()
		g.log.Info("voucher redeemed", "voucher", res.Ref, "account", res.Account, "amount_nanos", res.Amount, "credential", credential)
	case errors.As(err, &rf):
		g.metrics.Transport.WithLabelValues("voucher", rf.Reason.String()).Inc()
		g.log.Warn("voucher refused", "reason", rf.Reason.String(), "detail", rf.Detail, "credential", credential)
	default:
		g.log.Error("voucher not redeemed: books unavailable", "error", err)
	}
	return res, err
}

func (g *Gateway) redeem(ctx context.Context, raw []byte, forAccount, credential string) (ledger.RedeemResult, error) {
	forged := func(detail string) error {
		return &ledger.Refusal{Status: protocol.StatusRejected, Reason: protocol.ReasonVoucherForged, Detail: detail}
	}
	env, v, err := strict.DecodeVoucher(raw)
	if err != nil {
		return ledger.RedeemResult{}, &ledger.Refusal{Status: protocol.StatusRejected, Reason: protocol.ReasonOf(err), Detail: err.Error()}
	}
	iss := g.issuers[string(env.KeyID)]
	if iss == nil {
		return ledger.RedeemResult{}, forged(fmt.Sprintf("voucher %s is signed by key %x, not a trusted issuer", v.ID, env.KeyID))
	}
	if err := env.Verify(iss, nil); err != nil {
		return ledger.RedeemResult{}, forged(fmt.Sprintf("voucher %s: %v", v.ID, err))
	}
	return g.ingest.books.Redeem(ctx, &g.ingest.Snapshot().Terms, v, forAccount, credential)
}

// RedeemRequest is the body of POST /vouchers/redeem.
type RedeemRequest struct {
	// Voucher is the voucher's text form (protocol.VoucherText).
	Voucher string `json:"voucher"`
}

// RedeemRefusal is the body of a refused redemption.
type RedeemRefusal struct {
	Reason string `json:"reason"` // voucher_forged, voucher_expired, …
	Detail string `json:"detail"`
	// First is the redemption that used the voucher, for voucher_redeemed.
	First *ledger.Operation `json:"first,omitempty"`
}

// voucherRoutes serves POST /vouchers/redeem on the operator API: 200 with
// the redemption; 403 forged or tampered, 409 redeemed before (with the
// first redemption), 410 expired, 422 wrong account or currency, 400 not
// a voucher.
func (g *Gateway) voucherRoutes(m *http.ServeMux) {
	m.HandleFunc("POST /vouchers/redeem", func(w http.ResponseWriter, r *http.Request) {
		var req RedeemRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			http.Error(w, "want {\"voucher\": \"TEXT\"}: "+err.Error(), http.StatusBadRequest)
			return
		}
		raw, err := protocol.ParseVoucherText(req.Voucher)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		res, err := g.RedeemVoucher(r.Context(), raw, "", credentialOf(r))
		var rf *ledger.Refusal
		if errors.As(err, &rf) {
			code := http.StatusBadRequest
			switch rf.Reason {
			case protocol.ReasonVoucherForged:
				code = http.StatusForbidden
			case protocol.ReasonVoucherRedeemed:
				code = http.StatusConflict
			case protocol.ReasonVoucherExpired:
				code = http.StatusGone
			case protocol.ReasonVoucherWrongAccount, protocol.ReasonVoucherWrongCurrency:
				code = http.StatusUnprocessableEntity
			}
			body := RedeemRefusal{Reason: rf.Reason.String(), Detail: rf.Detail}
			if res.Seq != 0 {
				body.First = &res.Operation
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(body)
			return
		}
		answer(w, g, res, err)
	})
}

// voucherFromDevice redeems a voucher a device passed on (a keypad, a
// kiosk) for the device's own account, and returns the receipt, MAC'd
// with the device's receipt key: the voucher's id, seq 0, accepted or
// rejected with the reason, and the account's balance.
func (g *Gateway) voucherFromDevice(ctx context.Context, device string, payload []byte) ([]byte, protocol.Status) {
	snap := g.ingest.Snapshot()
	dev := snap.Registry.Device(device)
	if dev == nil || !dev.Active() {
		return nil, protocol.StatusRejected
	}
	r := protocol.Receipt{Device: device, Status: protocol.StatusAccepted, Currency: string(snap.Accounts[dev.Account].Currency)}
	if _, v, err := strict.DecodeVoucher(payload); err == nil {
		r.Voucher = v.ID
	}
	_, err := g.RedeemVoucher(ctx, payload, dev.Account, "device:"+device)
	var rf *ledger.Refusal
	switch {
	case errors.As(err, &rf):
		r.Status, r.Reason = protocol.StatusRejected, rf.Reason
	case err != nil:
		r.Status, r.Reason = protocol.StatusRetryLater, protocol.ReasonStoreError
	}
	r.Balance, r.HasBalance = g.ingest.books.Available(&snap.Terms, dev.Account), true
	mac, err := protocol.NewHMAC(dev.ReceiptKey())
	if err != nil {
		return nil, r.Status
	}
	var e protocol.Encoder
	b, err := e.AppendReceipt(nil, &r, mac)
	if err != nil {
		g.log.Error("voucher receipt not encoded", "device", device, "error", err)
		return nil, r.Status
	}
	return b, r.Status
}

// mqttVoucher is voucherFromDevice for the MQTT transports, which publish
// the receipt whatever its status.
func (g *Gateway) mqttVoucher(ctx context.Context, device string, payload []byte) []byte {
	b, _ := g.voucherFromDevice(ctx, device, payload)
	return b
}
