package ingest

import (
	"sync"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/protocol"
)

// paywordMarks remembers, per device, the last payword the gateway
// accepted from it, so that the next one is hashed down to it before its
// transaction, on the transport's goroutine instead of the committer
// (ledger.PrecheckPayword). A mark is a hint: the transaction checks that
// the chain's last payword is still the one hashed down to, and hashes
// again if it is not (a payword of the device committed meanwhile, or a
// mark of a batch that was rolled back).
type paywordMarks struct {
	m sync.Map // device id → paywordMark
}

type paywordMark struct {
	chain protocol.ChainID
	index uint32
	word  protocol.Payword
}

// precheck hashes pw down to its device's mark, if the mark is of its
// chain (nil if there is none). A mark's word was checked against the
// chain when it was accepted, so a payword after it that does not hash
// down to it is refused here: a device sending wrong paywords far ahead
// costs its own transport's goroutine the hashing, not the committer
// every device waits for.
func (pm *paywordMarks) precheck(device string, pw *protocol.PaywordTicket) (*ledger.PaywordPrecheck, error) {
	v, ok := pm.m.Load(device)
	if !ok {
		return nil, nil
	}
	mk := v.(paywordMark)
	if mk.chain != pw.Chain {
		return nil, nil
	}
	return ledger.PrecheckPayword(pw, mk.index, mk.word)
}

// accepted marks the payword at index of chain, word, as its device's
// last accepted one (a commitment's anchor is its index 0).
func (pm *paywordMarks) accepted(device string, chain protocol.ChainID, index uint32, word protocol.Payword) {
	pm.m.Store(device, paywordMark{chain: chain, index: index, word: word})
}
