package ledger

import (
	"bytes"
	"context"
	"encoding"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// Reservations (see metering.Grant for the rules and the invariants): a
// device's grant on a meter is one record, grants/device 0 meter, open or
// last closed. A grant request opens it or, while it is open, extends it;
// tickets naming it are charged against it (apply.go); a release, its
// expiry or its idle timeout closes it and gives back what it still
// reserves. Every change to a grant writes the grant and its account in
// one commit, checked before it is written: the account's Reserved moves
// by exactly what the grant's does.

// grantKey keys a device's grant on a meter.
func grantKey(device, meter string) []byte { return joinKey(device, meter) }

// getGrant reads a device's grant on a meter; nil if it never had one.
func getGrant(tx *bolt.Tx, device, meter string) (*metering.Grant, error) {
	v := tx.Bucket(bucketGrants).Get(grantKey(device, meter))
	if v == nil {
		return nil, nil
	}
	var g metering.Grant
	if err := g.UnmarshalBinary(v); err != nil {
		return nil, err
	}
	return &g, nil
}

// grantByID finds a device's grant id among its meters' grants; nil if
// none has that id.
func grantByID(tx *bolt.Tx, device string, id uint64) (*metering.Grant, error) {
	prefix := append([]byte(device), 0)
	c := tx.Bucket(bucketGrants).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var g metering.Grant
		if err := g.UnmarshalBinary(v); err != nil {
			return nil, err
		}
		if g.ID == id {
			return &g, nil
		}
	}
	return nil, nil
}

// GrantWire is g as a receipt carries it, at now.
func GrantWire(g *metering.Grant, now int64) protocol.Grant {
	w := protocol.Grant{ID: g.ID, Meter: g.Meter, Limit: g.Limit, Threshold: g.Threshold, Reserved: uint64(g.Reserved),
		Expiry: uint64(max(g.Expiry, 1)), Idle: uint64(max(g.Idle, 1)), Closed: protocol.GrantClosed(g.State), Epoch: g.Epoch}
	if g.Open() && g.Expiry > now {
		w.Validity = uint64(g.Expiry - now)
	}
	if g.Continue {
		w.Final, w.Grace = protocol.FinalContinue, g.Grace
	}
	return w
}

// grantReceipt answers request id req with grant g and the account's
// available balance.
func grantReceipt(p Payer, req uint64, g *metering.Grant, a metering.Account, now int64) protocol.Receipt {
	avail, _ := a.Available()
	return protocol.Receipt{Device: p.Device, Seq: req, Status: protocol.StatusAccepted, Balance: int64(avail), HasBalance: true,
		Currency: string(a.Currency), Grant: GrantWire(g, now)}
}

// Grant answers a device's grant request inside the write transaction
// tx: it opens the device's grant on the meter, or extends the open one,
// reserving the price of the units granted at the tariff in force. The
// units are the ones asked for (or the most the amount asked for buys),
// bounded by the grant terms' MaxUnits, by what the meter's plausibility
// rules let it count in the grant's validity, by what the account has
// available and by its spending caps; a grant of fewer units than asked
// is still a grant, none at all is insufficient funds (spending_cap when
// a cap is what stops it). The same request again is answered again.
func (bk *Books) Grant(tx *store.Tx, t *Terms, p Payer, r *protocol.GrantRequest) (protocol.Receipt, error) {
	in, err := loadGrantInput(tx.Bolt(), t, p, r)
	if err != nil {
		return protocol.Receipt{}, err
	}
	in.now = bk.now().UnixMilli()
	if g := in.grant; g != nil && r.Request <= g.Request {
		if r.Request == g.Request {
			return grantReceipt(p, r.Request, g, in.account, in.now), nil
		}
		return protocol.Receipt{}, Reject(protocol.ReasonGrantStale, "grant request %d of device %s: its last was %d", r.Request, p.Device, g.Request)
	}
	g, amount, err := decideGrant(&in)
	if err != nil {
		return protocol.Receipt{}, err
	}
	acct, err := in.account.Reserve(amount)
	if err != nil {
		return protocol.Receipt{}, withAvailable(&Refusal{Status: protocol.StatusInsufficientFunds, Detail: err.Error()}, in.account)
	}
	if err := bk.putGrant(tx, &g, in.account, acct, in.opening); err != nil {
		return protocol.Receipt{}, err
	}
	bk.cfg.OnGrant("granted", amount)
	return grantReceipt(p, r.Request, &g, acct, in.now), nil
}

// grantInput is what deciding a grant reads.
type grantInput struct {
	t       *Terms
	p       Payer
	r       *protocol.GrantRequest
	tariff  *metering.Tariff
	charge  metering.ChargeState // the (account, meter) pricing state: the quote starts from it
	meter   metering.MeterState  // the device's meter, as the gateway last charged it
	account metering.Account
	opening bool
	grant   *metering.Grant // the device's grant on the meter, open or closed; nil if none
	spent   metering.Spent  // the account's spending, for its caps
	devSpnt metering.Spent  // the device's, for its daily cap
	now     int64
}

// loadGrantInput reads what a grant request is decided on.
func loadGrantInput(tx *bolt.Tx, t *Terms, p Payer, r *protocol.GrantRequest) (grantInput, error) {
	in := grantInput{t: t, p: p, r: r, tariff: t.Tariffs.Get(p.Tariffs[r.Meter])}
	if in.tariff == nil {
		return in, Reject(protocol.ReasonUnknownMeter, "device %s has no tariff for meter %q", p.Device, r.Meter)
	}
	var err error
	if in.account, err = loadAccount(tx, t, p.Account); err != nil {
		return in, err
	}
	in.opening = tx.Bucket(bucketAccounts).Get([]byte(p.Account)) == nil
	if in.grant, err = getGrant(tx, p.Device, r.Meter); err != nil {
		return in, err
	}
	ds, err := getDeviceState(tx.Bucket(bucketDevices), p.Device)
	if err != nil {
		return in, err
	}
	in.meter = ds.meter(r.Meter)
	err = errors.Join(getRecord(tx.Bucket(bucketCharges), joinKey(p.Account, r.Meter), &in.charge),
		getRecord(tx.Bucket(bucketSpend), spendKey("account", p.Account), &in.spent),
		getRecord(tx.Bucket(bucketSpend), spendKey("device", p.Device), &in.devSpnt))
	return in, err
}

// getRecord decodes the record at key into v; v is left as it is when
// there is none.
func getRecord(b *bolt.Bucket, key []byte, v encoding.BinaryUnmarshaler) error {
	if raw := b.Get(key); raw != nil {
		return v.UnmarshalBinary(raw)
	}
	return nil
}

// decideGrant computes the grant a request gets and the amount it
// reserves, from what loadGrantInput read; no I/O.
func decideGrant(in *grantInput) (metering.Grant, metering.Nanos, error) {
	gt := terms(in.t).Grants.WithDefaults()
	want := in.r.Units
	bound := gt.MaxUnits
	if bound == 0 {
		bound = 1<<63 - 1
	}
	if rate := in.p.rules(in.t, in.r.Meter).MaxRate; !rate.IsZero() {
		bound = min(bound, rate.In(gt.Validity))
	}
	budget, err := in.account.Available()
	if err != nil {
		return metering.Grant{}, 0, Reject(protocol.ReasonChargeOverflow, "%v", err)
	}
	capped := false
	if room, ok := terms(in.t).Caps[in.p.Account].Room(in.spent, in.now); ok && room-in.account.Reserved < budget {
		budget, capped = max(room-in.account.Reserved, 0), true
	}
	if in.p.DailyCap > 0 {
		dc := metering.Caps{Day: in.p.DailyCap, Location: terms(in.t).Caps[in.p.Account].Location}
		if room, _ := dc.Room(in.devSpnt, in.now); room-openReserved(in.grant) < budget {
			budget, capped = max(room-openReserved(in.grant), 0), true
		}
	}
	if want == 0 {
		if want, err = in.tariff.UnitsFor(in.charge, metering.Nanos(min(in.r.Amount, 1<<63-1)), bound, in.now); err != nil {
			return metering.Grant{}, 0, Reject(protocol.ReasonChargeOverflow, "%v", err)
		}
	}
	units, _ := in.tariff.UnitsFor(in.charge, budget, min(want, bound), in.now)
	if units == 0 {
		ref := &Refusal{Status: protocol.StatusInsufficientFunds, Detail: fmt.Sprintf("account %s cannot fund a grant on %s", in.p.Account, in.r.Meter)}
		if capped {
			ref.Reason = protocol.ReasonSpendingCap
		}
		return metering.Grant{}, 0, withAvailable(ref, in.account)
	}
	amount, err := in.tariff.Quote(in.charge, units, in.now)
	if err != nil {
		return metering.Grant{}, 0, Reject(protocol.ReasonChargeOverflow, "%v", err)
	}
	g := metering.Grant{ID: in.r.Request, Device: in.p.Device, Account: in.p.Account, Meter: in.r.Meter, Epoch: in.r.Epoch}
	if old := in.grant; old != nil && old.Open() {
		g = *old // extended; a new register epoch starts its limit from the register
		if g.Epoch != in.r.Epoch {
			g.Epoch, g.Limit, g.Threshold = in.r.Epoch, 0, 0
		}
	}
	g.Request = in.r.Request
	register := in.r.Register
	if in.meter.Started && in.meter.Epoch == in.r.Epoch {
		register = max(register, in.meter.Register)
	}
	g, err = g.Extend(register, units, amount, in.now, gt)
	if err != nil {
		return g, 0, Reject(protocol.ReasonChargeOverflow, "%v", err)
	}
	return g, amount, nil
}

// openReserved is what grant g still reserves (0 if nil or closed).
func openReserved(g *metering.Grant) metering.Nanos {
	if g == nil || !g.Open() {
		return 0
	}
	return g.Reserved
}

// putGrant checks and writes a grant and its account: the account's
// reservation moved by exactly what the grant's did (a grant it replaces,
// closed, reserved nothing).
func (bk *Books) putGrant(tx *store.Tx, g *metering.Grant, before, after metering.Account, opening bool) error {
	old, err := getGrant(tx.Bolt(), g.Device, g.Meter)
	if err != nil {
		return err
	}
	if err := checkGrant(g, openReserved(old), before, after); err != nil {
		return err
	}
	var w writes
	marshal(&w, bucketGrants, grantKey(g.Device, g.Meter), *g)
	marshal(&w, bucketAccounts, []byte(after.ID), after)
	if opening {
		w.add(bucketOpenings, []byte(after.ID), encodeOpening(before.Balance))
	}
	if w.err != nil {
		return w.err
	}
	return putAll(tx, w.list)
}

// ReleaseGrant ends a device's grant inside the write transaction tx, at the
// device's word: what it still reserves goes back to the account. A
// release whose register is above what the gateway has charged for the
// meter waits (retry later) until the tickets up to it are in; a release
// of a grant already closed is answered with it as it closed.
func (bk *Books) ReleaseGrant(tx *store.Tx, t *Terms, p Payer, r *protocol.Release) (protocol.Receipt, error) {
	btx := tx.Bolt()
	g, err := grantByID(btx, p.Device, r.Grant)
	if err != nil {
		return protocol.Receipt{}, err
	}
	if g == nil {
		return protocol.Receipt{}, Reject(protocol.ReasonGrantUnknown, "device %s has no grant %d", p.Device, r.Grant)
	}
	acct, err := loadAccount(btx, t, p.Account)
	if err != nil {
		return protocol.Receipt{}, err
	}
	now := bk.now().UnixMilli()
	switch {
	case r.Request == g.Request && !g.Open():
		return grantReceipt(p, r.Request, g, acct, now), nil
	case r.Request <= g.Request:
		return protocol.Receipt{}, Reject(protocol.ReasonGrantStale, "release %d of device %s: its last request was %d", r.Request, p.Device, g.Request)
	}
	ds, err := getDeviceState(btx.Bucket(bucketDevices), p.Device)
	if err != nil {
		return protocol.Receipt{}, err
	}
	if m := ds.meter(g.Meter); g.Open() && (r.Epoch > m.Epoch || r.Epoch == m.Epoch && r.Register > m.Register) {
		return protocol.Receipt{}, &Refusal{Status: protocol.StatusRetryLater, Reason: protocol.ReasonGrantPending,
			Detail: fmt.Sprintf("release of grant %d at register %d: the gateway has charged %s up to %d", g.ID, r.Register, g.Meter, m.Register)}
	}
	g2 := *g
	g2.Request = r.Request
	after := acct
	if g.Open() {
		var back metering.Nanos
		g2, back = g2.Close(metering.GrantReleased, now)
		if after, err = acct.Unreserve(back); err != nil {
			return protocol.Receipt{}, err
		}
		bk.cfg.OnGrant("released", back)
	}
	if err := bk.putGrant(tx, &g2, acct, after, btx.Bucket(bucketAccounts).Get([]byte(p.Account)) == nil); err != nil {
		return protocol.Receipt{}, err
	}
	return grantReceipt(p, r.Request, &g2, after, now), nil
}

// CloseGrants closes every open grant due at now (expired, or idle for
// its timeout) and gives back what each still reserves. It returns how
// many it closed.
func (bk *Books) CloseGrants(ctx context.Context, t *Terms, now int64) (int, error) {
	var closed int
	err := bk.st.Do(ctx, func(stx *store.Tx) error {
		closed = 0
		tx := stx.Bolt()
		var due []metering.Grant
		if err := tx.Bucket(bucketGrants).ForEach(func(_, v []byte) error {
			var g metering.Grant
			if err := g.UnmarshalBinary(v); err != nil {
				return err
			}
			if s := g.Due(now); g.Open() && s != metering.GrantOpen {
				g2, _ := g.Close(s, now)
				due = append(due, g2)
			}
			return nil
		}); err != nil {
			return err
		}
		for i := range due {
			if err := bk.closeGrant(stx, t, &due[i]); err != nil {
				return err
			}
		}
		closed = len(due)
		return nil
	})
	return closed, err
}

// GrantTotals counts the open grants, adds up what they reserve and
// counts those due to close at now (CloseGrants), in one read.
func (bk *Books) GrantTotals(now int64) (open int, reserved metering.Nanos, due int, err error) {
	err = bk.eachGrant(func(g *metering.Grant) {
		if g.Open() {
			open++
			reserved += g.Reserved
			if g.Due(now) != metering.GrantOpen {
				due++
			}
		}
	})
	return open, reserved, due, err
}

// eachGrant calls f with every grant the books hold.
func (bk *Books) eachGrant(f func(g *metering.Grant)) error {
	return bk.st.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketGrants).ForEach(func(_, v []byte) error {
			var g metering.Grant
			if err := g.UnmarshalBinary(v); err != nil {
				return err
			}
			f(&g)
			return nil
		})
	})
}

// closeGrant writes a grant closed by CloseGrants with its account.
func (bk *Books) closeGrant(stx *store.Tx, t *Terms, g *metering.Grant) error {
	acct, err := loadAccount(stx.Bolt(), t, g.Account)
	if err != nil {
		return err
	}
	after, err := acct.Unreserve(g.Released)
	if err != nil {
		return err
	}
	bk.cfg.OnGrant(g.State.String(), g.Released)
	return bk.putGrant(stx, g, acct, after, stx.Bolt().Bucket(bucketAccounts).Get([]byte(g.Account)) == nil)
}

// Grants lists the grants the books hold, open and last closed, of one
// account ("" for all), by device and meter.
func (bk *Books) Grants(account string) ([]metering.Grant, error) {
	var out []metering.Grant
	err := bk.eachGrant(func(g *metering.Grant) {
		if account == "" || g.Account == account {
			out = append(out, *g)
		}
	})
	return out, err
}
