package protocol

// Kind says which message a payload is (payload key 0). It is inside the
// signed payload, so a signature made for one kind of message can never be
// passed off as another.
type Kind uint8

// Message kinds.
const (
	KindTicket    Kind = 1
	KindReceipt   Kind = 2
	KindAggregate Kind = 3
	KindVoucher   Kind = 4
	KindCredit    Kind = 5
	KindHold      Kind = 6
	// KindCommitment is a payword chain's commitment (payword.go).
	KindCommitment Kind = 7
	// KindPayword is a payword ticket: a bare CBOR map, not a COSE
	// message, since the payword is its own proof (payword.go).
	KindPayword Kind = 8
	// KindChainProgress is a chain progress record (progress.go).
	KindChainProgress Kind = 9
	// KindRestore is a restored gateway's announcement (restore.go).
	KindRestore Kind = 10
	// KindTimeRequest is a device's question for the time (timereq.go).
	KindTimeRequest Kind = 11
	// KindGrantRequest is a device's request for a grant (grant.go).
	KindGrantRequest Kind = 12
	// KindRelease is a device's end of its grant (grant.go).
	KindRelease Kind = 13
	// KindCommand is a provider's signed command to its gateways
	// (command.go).
	KindCommand Kind = 14
	// KindCommandAck is a gateway's acknowledgement of a command, in its
	// aggregate stream (command.go).
	KindCommandAck Kind = 15
)

// String returns the kind's name.
func (k Kind) String() string {
	switch k {
	case KindTicket:
		return "ticket"
	case KindReceipt:
		return "receipt"
	case KindAggregate:
		return "aggregate"
	case KindVoucher:
		return "voucher"
	case KindCredit:
		return "credit"
	case KindHold:
		return "hold"
	case KindCommitment:
		return "commitment"
	case KindPayword:
		return "payword"
	case KindChainProgress:
		return "chain_progress"
	case KindRestore:
		return "restore"
	case KindTimeRequest:
		return "time_request"
	case KindGrantRequest:
		return "grant_request"
	case KindRelease:
		return "release"
	case KindCommand:
		return "command"
	case KindCommandAck:
		return "command_ack"
	}
	return "unknown"
}

// keyKind is payload key 0 in every message.
const keyKind = 0

// KindOf reads the kind of a COSE message's payload (its key 0) without
// checking the rest; false if b is not a COSE message whose payload
// starts with a kind.
func KindOf(b []byte) (Kind, bool) {
	var env Envelope
	if ParseEnvelope(b, &env) != nil {
		return 0, false
	}
	rd := reader{b: env.Payload}
	keys := rd.mapOf(64, "payload")
	if k, ok := keys.next(); !ok || k != keyKind {
		return 0, false
	}
	v := rd.uint("kind")
	if rd.err != nil || v > 255 {
		return 0, false
	}
	return Kind(v), true
}

// Classify says which message a device sent, from a peek at its first
// bytes: a payword ticket is a bare CBOR map (every other message is a
// tagged COSE structure), anything else is the kind its payload names
// (KindOf). It checks nothing else: the message's own parser does. false
// means the bytes name no kind; the ticket parser says why.
func Classify(b []byte) (Kind, bool) {
	if IsPaywordTicket(b) {
		return KindPayword, true
	}
	return KindOf(b)
}
