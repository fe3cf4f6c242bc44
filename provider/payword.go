package provider

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/farthing-iot/farthing/protocol"
)

// ErrPayword: a payword proof that does not hold.
var ErrPayword = errors.New("provider: payword proof does not hold")

// PaywordProof is what proves a payword device's usage without trusting
// the gateway: the device's chain commitment as it sent it, and two
// paywords of the chain, at indexes From < To (From 0 is the anchor). The
// gateway's operator API serves each chain's latest (GET /chains/{device})
// and its state file keeps it.
type PaywordProof struct {
	Commitment []byte
	From       uint32
	FromWord   protocol.Payword
	To         uint32
	ToWord     protocol.Payword
}

// PaywordUsage is usage a PaywordProof proves: the device's meter moved
// from register FromRegister to ToRegister, Quantity units.
type PaywordUsage struct {
	Device       string           `json:"device"`
	Meter        string           `json:"meter"`
	Chain        protocol.ChainID `json:"chain"`
	FromRegister uint64           `json:"from_register"`
	ToRegister   uint64           `json:"to_register"`
	Quantity     uint64           `json:"quantity"`
	// Attested: the commitment's signature was checked with the device's
	// own key. Without it the paywords prove only that whoever made the
	// commitment revealed them.
	Attested bool `json:"attested"`
}

// VerifyPayword checks a proof and returns the usage it proves. The
// commitment must parse; with device (the device's Ed25519 verifier, or
// its ticket MAC key for an HMAC device) its signature must verify too —
// without it, the proof shows only that whoever made the commitment
// revealed the paywords. Then w_From must hash down to the commitment's
// anchor in From steps and w_To down to w_From in To − From steps: To −
// From + From = To hashes in all, at most the chain's length.
func VerifyPayword(p PaywordProof, device protocol.Verifier) (PaywordUsage, error) {
	u, c, err := checkProof(p, func(string) protocol.Verifier { return device })
	if err != nil {
		return u, err
	}
	return u, WalkProof(&c, &p, 0, c.Anchor)
}

// checkProof is VerifyPayword without the hashing: the commitment parsed
// and, if keyOf has a key for its device, verified; the indexes in
// range; the usage they stand for.
func checkProof(p PaywordProof, keyOf func(device string) protocol.Verifier) (PaywordUsage, protocol.Commitment, error) {
	var env protocol.Envelope
	var c protocol.Commitment
	if err := protocol.ParseCommitment(p.Commitment, &env, &c); err != nil {
		return PaywordUsage{}, c, fmt.Errorf("%w: commitment: %v", ErrPayword, err)
	}
	u := PaywordUsage{Device: c.Device, Meter: c.Meter, Chain: c.Chain}
	if device := keyOf(c.Device); device != nil {
		if err := env.Verify(device, nil); err != nil {
			return u, c, fmt.Errorf("%w: the commitment is not the device's: %v", ErrPayword, err)
		}
		u.Attested = true
	}
	switch {
	case p.To > c.Length:
		return u, c, fmt.Errorf("%w: index %d is past the chain's length %d", ErrPayword, p.To, c.Length)
	case p.From > p.To:
		return u, c, fmt.Errorf("%w: from index %d is above to index %d", ErrPayword, p.From, p.To)
	}
	u.FromRegister, u.ToRegister = c.Register(p.From), c.Register(p.To)
	u.Quantity = u.ToRegister - u.FromRegister
	return u, c, nil
}

// WalkProof checks that w_To hashes down to w_From, and w_From down to
// known, the chain's payword at index at ≤ From: the anchor at 0, or one
// proven before, so that a receiver hashes each step of a chain once,
// not From steps again for every record.
func WalkProof(c *protocol.Commitment, p *PaywordProof, at uint32, known protocol.Payword) error {
	switch {
	case protocol.PaywordWalk(&c.Chain, p.ToWord, uint64(p.To-p.From)) != p.FromWord:
		return fmt.Errorf("%w: payword %d does not hash down to payword %d", ErrPayword, p.To, p.From)
	case protocol.PaywordWalk(&c.Chain, p.FromWord, uint64(p.From-at)) != known:
		if at == 0 {
			return fmt.Errorf("%w: payword %d does not hash down to the anchor", ErrPayword, p.From)
		}
		return fmt.Errorf("%w: payword %d does not hash down to payword %d, proven before", ErrPayword, p.From, at)
	}
	return nil
}

// PaywordClaim is one aggregate's payword quantity (protocol.Aggregate
// .Proven) and what the chain progress records naming it proved of it.
// Reconciled when Claimed == Proven: every unit the aggregate charged for
// payword tickets is proven by the devices' own paywords. A progress
// record can come before its aggregate (transports do not keep order):
// the claim waits with Booked false until the aggregate is booked.
type PaywordClaim struct {
	Stream   string `json:"stream"` // the aggregate's stream and seq, as protocol.StreamID.Key
	Provider string `json:"provider"`
	Account  string `json:"account"`
	Meter    string `json:"meter"`
	Claimed  uint64 `json:"claimed"`
	Proven   uint64 `json:"proven"`
	Records  uint64 `json:"records"`
	Booked   bool   `json:"aggregate_booked"`
	// Foreign: records that came before the aggregate named it for
	// another provider, account or meter than the aggregate's. Such a
	// claim is never reconciled: an operator must look.
	Foreign bool `json:"foreign_records,omitempty"`
}

// Reconciled reports whether the claim's aggregate is booked and proven
// to the unit.
func (c *PaywordClaim) Reconciled() bool { return c.Booked && !c.Foreign && c.Claimed == c.Proven }

// ClaimAggregate adds an aggregate to its claim (c is the claim so far,
// maybe early progress records; zero if none).
func ClaimAggregate(c PaywordClaim, a *protocol.Aggregate) PaywordClaim {
	if c.Records > 0 && (c.Provider != a.Provider || c.Account != a.Account || c.Meter != a.Meter) {
		c.Foreign = true
	}
	c.Provider, c.Account, c.Meter = a.Provider, a.Account, a.Meter
	c.Claimed, c.Booked = a.Proven, true
	return c
}

// ChainMark is how far the books have proven a device's chain: the last
// index proven (LastTo), if any record of the chain was proven (Seen).
type ChainMark struct {
	LastTo uint32
	Seen   bool
}

// ProveClaim adds a verified progress record's usage to the claim of the
// aggregate it names, or says why it cannot: a chain's records must not
// prove an index twice (lastTo: the chain's highest index proven so far,
// seen: any), and the record's payer and meter must be the aggregate's.
// A record naming no aggregate (from a gateway older than the link)
// needs no claim: ok is false then.
func ProveClaim(c PaywordClaim, p *protocol.ChainProgress, u *PaywordUsage, aggregateBooked bool, mark ChainMark) (_ PaywordClaim, ok bool, why error) {
	lastTo, seen := mark.LastTo, mark.Seen
	switch {
	case seen && p.From < lastTo:
		return c, false, fmt.Errorf("%w: it proves chain %x of %s from index %d, below index %d proven before", ErrPayword, u.Chain, u.Device, p.From, lastTo)
	case p.Aggregate == 0:
		return c, false, nil
	case c.Booked || c.Records > 0:
		if c.Provider != p.Provider || c.Account != p.Account || c.Meter != u.Meter {
			return c, false, fmt.Errorf("%w: aggregate %d is of %s/%s/%s, the record of %s/%s/%s", ErrPayword, p.Aggregate,
				c.Provider, c.Account, c.Meter, p.Provider, p.Account, u.Meter)
		}
	case aggregateBooked:
		return c, false, fmt.Errorf("%w: aggregate %d claims no payword usage, or all of it is proven already", ErrPayword, p.Aggregate)
	default:
		c.Provider, c.Account, c.Meter = p.Provider, p.Account, u.Meter
	}
	q, ok := addU64(c.Proven, u.Quantity)
	if !ok {
		return c, false, fmt.Errorf("%w: the proven quantity of aggregate %d overflows", ErrPayword, p.Aggregate)
	}
	c.Proven, c.Records = q, c.Records+1
	return c, true, nil
}

// ReadDeviceKeys reads a file of payword devices' Ed25519 public keys for
// TrustDevices: a line "DEVICE-ID HEX-PUBLIC-KEY" per device (as
// farthing device list --public-keys prints them); blank lines and lines
// starting with # are skipped.
func ReadDeviceKeys(path string) (map[string]ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys := map[string]ed25519.PublicKey{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		var k []byte
		if len(f) == 2 {
			k, err = hex.DecodeString(f[1])
		}
		if len(f) != 2 || err != nil || len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%s:%d: want DEVICE-ID and a hex Ed25519 public key (64 hex digits)", path, i+1)
		}
		if _, dup := keys[f[0]]; dup {
			return nil, fmt.Errorf("%s:%d: device %s listed twice", path, i+1, f[0])
		}
		keys[f[0]] = k
	}
	return keys, nil
}
