package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// RedeemResult is what redeeming a voucher did: the top-up entry it made
// and the balance after it.
type RedeemResult struct {
	Operation
	Balance metering.Nanos `json:"balance_nanos"`
	// Available is what forAccount has available after the redemption (or
	// its refusal), read in the same transaction; 0 without forAccount.
	Available int64 `json:"-"`
}

// Redeem credits a voucher whose signature the caller has checked against
// a trusted issuer, once per voucher id, ever. forAccount, if not empty,
// is the account of the device that passed the voucher on: a voucher for
// another account is refused. A refusal is a *Refusal with its reason
// (voucher_expired, voucher_wrong_account, voucher_wrong_currency,
// voucher_redeemed) and changes nothing; for voucher_redeemed the first
// redemption is returned with it. The entry (kind top_up, reference
// "voucher:ID"), the balance and the audit record are committed together,
// with fsync, before Redeem returns.
func (bk *Books) Redeem(ctx context.Context, t *Terms, v protocol.Voucher, by Redeemer) (RedeemResult, error) {
	var res RedeemResult
	now := bk.now().UnixMilli()
	forAccount := by.Account
	err := bk.st.Do(ctx, func(stx *store.Tx) error {
		tx := stx.Bolt()
		res = RedeemResult{}
		err := bk.redeem(stx, t, redemption{v: v, forAccount: forAccount, forDevice: by.Device, credential: by.Credential, now: now}, &res)
		if forAccount != "" {
			if a, aerr := loadAccount(tx, t, forAccount); aerr == nil {
				if n, nerr := a.Available(); nerr == nil {
					res.Available = int64(n)
				}
			}
		}
		return err
	})
	return res, err
}

// Redeemer is who redeems a voucher: a device passing it on (its account
// and id), or an operator (neither); and the credential, for the audit
// log.
type Redeemer struct {
	Account, Device, Credential string
}

// redemption is one voucher to redeem, for forAccount (or any account)
// and forDevice (or no device), by credential, at now (Unix ms).
type redemption struct {
	v                                 protocol.Voucher
	forAccount, forDevice, credential string
	now                               int64
}

// redeem is Redeem's transaction.
func (bk *Books) redeem(stx *store.Tx, t *Terms, r redemption, res *RedeemResult) error {
	tx := stx.Bolt()
	v, forAccount, credential, now := r.v, r.forAccount, r.credential, r.now
	refKey := []byte("voucher/" + v.ID)
	if seq := getU64(tx.Bucket(bucketRefs).Get(refKey)); seq != 0 {
		if o, err := decodeOperation(tx.Bucket(bucketAudit).Get(putU64(seq))); err == nil {
			res.Operation = o
		}
		return &Refusal{Status: protocol.StatusRejected, Reason: protocol.ReasonVoucherRedeemed,
			Detail: fmt.Sprintf("voucher %s was redeemed before (audit %d)", v.ID, seq)}
	}
	if revokedVoucher(tx, v.ID) {
		return &Refusal{Status: protocol.StatusRejected, Reason: protocol.ReasonVoucherRevoked,
			Detail: fmt.Sprintf("voucher %s was revoked by its provider", v.ID)}
	}
	if forAccount != "" && forAccount != v.Account {
		return &Refusal{Status: protocol.StatusRejected, Reason: protocol.ReasonVoucherWrongAccount,
			Detail: fmt.Sprintf("voucher %s is for account %s, not %s", v.ID, v.Account, forAccount)}
	}
	a, err := loadAccount(tx, t, v.Account)
	if err != nil {
		return &Refusal{Status: protocol.StatusRejected, Reason: protocol.ReasonVoucherWrongAccount,
			Detail: fmt.Sprintf("voucher %s is for account %s, which this gateway does not keep", v.ID, v.Account)}
	}
	if string(a.Currency) != v.Currency {
		return &Refusal{Status: protocol.StatusRejected, Reason: protocol.ReasonVoucherWrongCurrency,
			Detail: fmt.Sprintf("voucher %s is in %s, account %s in %s", v.ID, v.Currency, a.ID, a.Currency)}
	}
	if int64(v.Expiry) <= now {
		return &Refusal{Status: protocol.StatusRejected, Reason: protocol.ReasonVoucherExpired,
			Detail: fmt.Sprintf("voucher %s expired at %s", v.ID, time.UnixMilli(int64(v.Expiry)).UTC().Format(time.RFC3339))}
	}
	if v.Gateway != "" && v.Gateway != terms(t).GatewayID {
		return &Refusal{Status: protocol.StatusRejected, Reason: protocol.ReasonVoucherOtherGateway,
			Detail: fmt.Sprintf("voucher %s is bound to gateway %s, this is %s", v.ID, v.Gateway, terms(t).GatewayID)}
	}
	if v.Device != "" && v.Device != r.forDevice {
		who := "an operator's redemption"
		if r.forDevice != "" {
			who = "device " + r.forDevice
		}
		return &Refusal{Status: protocol.StatusRejected, Reason: protocol.ReasonVoucherOtherDevice,
			Detail: fmt.Sprintf("voucher %s is bound to device %s, not %s", v.ID, v.Device, who)}
	}
	amount := metering.Money{Nanos: metering.Nanos(v.Amount), Currency: a.Currency}
	o, bal, err := bk.credit(stx, t, a, creditEntry{amount: amount, kind: "voucher", ref: "voucher:" + v.ID, refKey: refKey, credential: credential})
	if err != nil {
		return err
	}
	res.Operation, res.Balance = o, bal
	return nil
}
