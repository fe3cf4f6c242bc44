package provider

import (
	"errors"
	"fmt"

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
}

// VerifyPayword checks a proof and returns the usage it proves. The
// commitment must parse; with device (the device's Ed25519 verifier, or
// its ticket MAC key for an HMAC device) its signature must verify too —
// without it, the proof shows only that whoever made the commitment
// revealed the paywords. Then w_From must hash down to the commitment's
// anchor in From steps and w_To down to w_From in To − From steps: To −
// From + From = To hashes in all, at most the chain's length.
func VerifyPayword(p PaywordProof, device protocol.Verifier) (PaywordUsage, error) {
	var env protocol.Envelope
	var c protocol.Commitment
	if err := protocol.ParseCommitment(p.Commitment, &env, &c); err != nil {
		return PaywordUsage{}, fmt.Errorf("%w: commitment: %v", ErrPayword, err)
	}
	if device != nil {
		if err := env.Verify(device, nil); err != nil {
			return PaywordUsage{}, fmt.Errorf("%w: the commitment is not the device's: %v", ErrPayword, err)
		}
	}
	u := PaywordUsage{Device: c.Device, Meter: c.Meter, Chain: c.Chain}
	switch {
	case p.To > c.Length:
		return u, fmt.Errorf("%w: index %d is past the chain's length %d", ErrPayword, p.To, c.Length)
	case p.From > p.To:
		return u, fmt.Errorf("%w: from index %d is above to index %d", ErrPayword, p.From, p.To)
	case protocol.PaywordWalk(&c.Chain, p.ToWord, uint64(p.To-p.From)) != p.FromWord:
		return u, fmt.Errorf("%w: payword %d does not hash down to payword %d", ErrPayword, p.To, p.From)
	case protocol.PaywordWalk(&c.Chain, p.FromWord, uint64(p.From)) != c.Anchor:
		return u, fmt.Errorf("%w: payword %d does not hash down to the anchor", ErrPayword, p.From)
	}
	u.FromRegister, u.ToRegister = c.Register(p.From), c.Register(p.To)
	u.Quantity = u.ToRegister - u.FromRegister
	return u, nil
}
