package ingest

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// LoadIssuers reads the voucher issuers' public keys (the
// voucher_issuers setting), by key id.
func LoadIssuers(files []string) (map[string]*strict.Ed25519Verifier, error) {
	out := map[string]*strict.Ed25519Verifier{}
	for i, f := range files {
		k, err := keyfile.Load(f)
		if err != nil {
			return nil, fmt.Errorf("voucher_issuers[%d]: %w", i, err)
		}
		pub := k.Public
		if k.Private != nil {
			pub = k.Private.Public().(ed25519.PublicKey)
		}
		if pub == nil {
			return nil, fmt.Errorf("voucher_issuers[%d]: %s is not an Ed25519 key", i, f)
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
func (in *Ingest) RedeemVoucher(ctx context.Context, raw []byte, forAccount, credential string) (ledger.RedeemResult, error) {
	res, _, err := in.redeem(ctx, raw, forAccount, "", credential)
	in.noteRedemption(res, credential, err)
	return res, err
}

// noteRedemption counts and logs a redemption's outcome.
func (in *Ingest) noteRedemption(res ledger.RedeemResult, credential string, err error) {
	var rf *ledger.Refusal
	switch {
	case err == nil:
		in.metrics.Transport.WithLabelValues("voucher", "redeemed").Inc()
		in.log.Info("voucher redeemed", "voucher", res.Ref, "account", res.Account, "amount_nanos", res.Amount, "credential", credential)
	case errors.As(err, &rf):
		in.metrics.Transport.WithLabelValues("voucher", rf.Reason.String()).Inc()
		in.log.Warn("voucher refused", "reason", rf.Reason.String(), "detail", rf.Detail, "credential", credential)
	default:
		in.log.Error("voucher not redeemed: books unavailable", "error", err)
	}
}

// redeem decodes, verifies and redeems a voucher (for a device's account
// and the device itself when a device passed it on); id is the voucher's
// id once its bytes could be read.
func (in *Ingest) redeem(ctx context.Context, raw []byte, forAccount, forDevice, credential string) (res ledger.RedeemResult, id string, err error) {
	forged := func(detail string) error {
		return &ledger.Refusal{Status: protocol.StatusRejected, Reason: protocol.ReasonVoucherForged, Detail: detail}
	}
	env, v, err := strict.DecodeVoucher(raw)
	if err != nil {
		return res, "", &ledger.Refusal{Status: protocol.StatusRejected, Reason: protocol.ReasonOf(err), Detail: err.Error()}
	}
	iss := in.cfg.Issuers[string(env.KeyID)]
	if iss == nil {
		return res, v.ID, forged(fmt.Sprintf("voucher %s is signed by key %x, not a trusted issuer", v.ID, env.KeyID))
	}
	if err := env.Verify(iss, nil); err != nil {
		return res, v.ID, forged(fmt.Sprintf("voucher %s: %v", v.ID, err))
	}
	res, err = in.books.Redeem(ctx, &in.Snapshot().Terms, v, ledger.Redeemer{Account: forAccount, Device: forDevice, Credential: credential})
	return res, v.ID, err
}

// startVoucher takes a voucher a device passed on (a keypad, a kiosk) for
// the device's own account. Vouchers are rare: the redemption, which
// waits for its own commit, runs when the receipt is waited for, not on
// the transport's goroutine. The receipt names the voucher (seq 0):
// accepted, or rejected with the reason, and the account's available
// balance as the redemption's transaction left it.
func (in *Ingest) startVoucher(p *Pending) {
	dev := p.snap.Registry.Device(p.msg.Device)
	if dev == nil || !dev.Active() {
		p.ref = reject(protocol.ReasonUnknownKey, "no active device %q to redeem a voucher for", p.msg.Device)
		return
	}
	p.dev = dev
	p.redeem = func() protocol.Receipt {
		credential := "device:" + dev.ID
		res, id, err := in.redeem(p.ctx, p.msg.Payload, dev.Account, dev.ID, credential)
		in.noteRedemption(res, credential, err)
		r := protocol.Receipt{Device: dev.ID, Status: protocol.StatusAccepted, Voucher: id,
			Currency: string(p.snap.Accounts[dev.Account].Currency)}
		var rf *ledger.Refusal
		switch {
		case errors.As(err, &rf):
			r.Status, r.Reason = protocol.StatusRejected, rf.Reason
		case err != nil:
			r.Status, r.Reason = protocol.StatusRetryLater, protocol.ReasonStoreError
			r.RetryAfter = uint32(in.cfg.RetryAfter.Milliseconds())
		}
		r.Balance, r.HasBalance = res.Available, true
		return r
	}
}
