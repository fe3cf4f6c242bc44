package operator

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/protocol"
)

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
func (a *API) voucherRoutes(m *http.ServeMux) {
	m.HandleFunc("POST /vouchers/redeem", func(w http.ResponseWriter, r *http.Request) {
		var req RedeemRequest
		if !decodeBody(w, r, 4<<10, &req, "want {\"voucher\": \"TEXT\"}") {
			return
		}
		raw, err := protocol.ParseVoucherText(req.Voucher)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		res, err := a.ingest.RedeemVoucher(r.Context(), raw, "", CredentialOf(r))
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
			case protocol.ReasonVoucherWrongAccount, protocol.ReasonVoucherWrongCurrency, protocol.ReasonVoucherOtherGateway, protocol.ReasonVoucherOtherDevice:
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
		answer(w, a, res, err)
	})
}
