// Package protocol defines Farthing's bytes: the usage ticket a device
// sends, the receipt the gateway answers with, and the aggregate the
// gateway forwards to a provider. It is the only place that defines them.
//
// Every message is a tagged COSE message (RFC 9052), so any COSE library
// can check it:
//
//	ticket    = COSE_Sign1 / COSE_Mac0      ; signed (EdDSA) or MAC'd (HMAC 256/256) by the device
//	receipt   = COSE_Mac0 / COSE_Sign1      ; MAC'd with the device's receipt key, or signed by the gateway
//	aggregate = COSE_Sign1                  ; signed by the gateway's Ed25519 key
//	voucher   = COSE_Sign1                  ; signed by a voucher issuer's Ed25519 key
//	credit    = COSE_Sign1                  ; signed by the gateway's Ed25519 key
//	hold      = COSE_Sign1                  ; signed by the gateway's Ed25519 key
//	commitment = COSE_Sign1 / COSE_Mac0     ; a payword chain's, signed or MAC'd by the device
//	progress  = COSE_Sign1                  ; a payword chain's progress, signed by the gateway's Ed25519 key
//	grant-request, release = COSE_Sign1 / COSE_Mac0   ; a device's, signed or MAC'd like a ticket (grant.go)
//	command   = COSE_Sign1                  ; a provider's, signed by its control key (command.go)
//	command-ack = COSE_Sign1                ; a gateway's acknowledgement of a command, in its stream
//
//	COSE_Sign1 = #6.18([
//	  protected:   bstr .cbor {1: -8, 4: kid},   ; alg EdDSA (Ed25519), key id
//	  unprotected: {},
//	  payload:     bstr .cbor payload,
//	  signature:   bstr .size 64,
//	])
//	COSE_Mac0 = #6.17([
//	  protected:   bstr .cbor {1: 5, 4: kid},    ; alg HMAC 256/256, key id
//	  unprotected: {},
//	  payload:     bstr .cbor payload,
//	  tag:         bstr .size 32,
//	])
//	kid = bstr .size (1..16)   ; Farthing keys: 8 bytes, see KeyIDOf
//
// The signature covers the Sig_structure and the MAC the MAC_structure of
// RFC 9052 sections 4.4 and 6.3, with an empty byte string as external_aad:
//
//	Sig_structure = ["Signature1", protected: bstr, external_aad: bstr .size 0, payload: bstr]
//	MAC_structure = ["MAC0", protected: bstr, external_aad: bstr .size 0, payload: bstr]
//
// The payloads are maps with small integer keys. Key 0 is the message kind
// in every payload, so a signature over one kind can never pass for
// another:
//
//	payload = ticket-payload / receipt-payload / aggregate-payload / voucher-payload / credit-payload /
//	          hold-payload / commitment-payload / progress-payload / restore-payload / time-request-payload /
//	          grant-request-payload / release-payload / command-payload / command-ack-payload
//
// A payword chain's commitment (kind 7) is a COSE message like the rest;
// the payword ticket (kind 8) is a bare CBOR map with no COSE envelope:
// the payword proves itself (see payword.go for the hash and the rules).
// The gateway's chain progress record (kind 9) goes in its aggregate
// stream (see progress.go).
//
//	ticket-payload = {
//	  0: 1,                  ; kind: ticket
//	  1: id,                 ; device id
//	  2: seq,                ; strictly increasing per device, gaps allowed
//	  3: ms,                 ; device time, Unix milliseconds
//	  ? 4: uint .gt 0,       ; register epoch; absent means epoch 0
//	  5: [1*16 reading],     ; meter names unique within a ticket
//	  ? 6: id,               ; account to charge, if the device has several
//	  ? 7: id,               ; session id (a charging or vending session)
//	  ? 8: seq,              ; the grant its usage is under (grant.go)
//	}
//	reading = [
//	  meter: name,           ; e.g. "energy_wh", "data_bytes", "water_ml"
//	  register: uint,        ; cumulative count in the meter's base unit
//	]
//
//	receipt-payload = {
//	  0: 2,                  ; kind: receipt
//	  1: id,                 ; device id of the ticket
//	  2: uint,               ; seq of the ticket; 0 if the ticket could not be read
//	  3: status,             ; 0 accepted, 1 duplicate, 2 rejected, 3 insufficient funds, 4 retry later
//	  ? 4: reason,           ; why (see Reason); required with status 2 and 4; with status 1
//	                         ; only 71 (superseded: never seen, below the last accepted seq);
//	                         ; with status 3 only 72 (spending cap reached, not the balance)
//	  5: nanos,              ; charged for this ticket (a duplicate repeats the original charge)
//	  ? 6: int,              ; balance in nano-units: prepaid balance or remaining credit
//	  ? 7: currency,
//	  ? 8: uint .gt 0,       ; retry after, milliseconds
//	  ? 9: id,               ; voucher id: the receipt answers a voucher, seq is 0
//	  ? 10: 1,               ; low balance: the account is below its low-balance level
//	  ? 11: ms .gt 0,        ; the gateway's clock when it answered: a device without a
//	                         ; real-time clock learns the time from it (inside the MAC)
//	  ? 12: bstr .size 8,    ; the nonce of the time request this answers (seq 0, status 0,
//	                         ; a time); nowhere else
//	  ? 13: grant,           ; the answer to a grant request or a release: seq is its id,
//	                         ; status 0, charged 0 (grant.go)
//	}
//
//	grant-request-payload = { 0: 12, 1: id, 2: seq, 3: name, 4: uint, ? 5: uint .gt 0,
//	                          ? 6: uint .gt 0, ? 7: uint .gt 0 }   ; see grant.go
//	release-payload = { 0: 13, 1: id, 2: seq, 3: seq, 4: uint, ? 5: uint .gt 0 }
//	grant = { 1: seq, 2: name, 3: uint, 4: uint, 5: nanos, 6: ms, 7: uint, 8: uint .gt 0,
//	          9: 0 / 1, ? 10: uint .gt 0, ? 11: 1..3, ? 12: uint .gt 0 }
//
//	time-request-payload = {  ; a device asks for the time; MAC'd or signed like a ticket,
//	  0: 11,                 ; sent where tickets go; the answer is a receipt with key 12
//	  1: id,                 ; device
//	  2: bstr .size 8,       ; nonce: any value the device never used (devicefw: one of its seqs)
//	}
//
//	aggregate-payload = {
//	  0: 3,                  ; kind: aggregate
//	  1: id,                 ; gateway id
//	  2: seq,                ; aggregate seq, gapless per gateway from 1: the idempotency key
//	  3: id,                 ; provider, who is owed
//	  4: id,                 ; account, who owes
//	  5: name,               ; meter
//	  6: ms,                 ; window start, inclusive
//	  7: ms,                 ; window end, exclusive, > start
//	  8: uint,               ; quantity, meter base units
//	  9: nanos,              ; amount, exact
//	  10: currency,
//	  11: uint,              ; number of tickets included
//	  12: bstr .size 32,     ; SHA-256 Merkle root over the included tickets
//	  ? 13: seq,             ; this corrects aggregate seq N of the same window
//	  ? 14: uint .gt 0,      ; stream epoch; absent means epoch 0 (see below)
//	  ? 15: [1*8 band],      ; price bands, sorted by name, names distinct;
//	                         ; their quantities add up to key 8, amounts to key 9
//	  ? 16: uint .gt 0,      ; proven: the part of key 8 payword tickets reported;
//	                         ; the chain progress records naming this seq add up to it
//	  ? 17: id,              ; the tariff version that priced every ticket in it (a
//	                         ; tariff_set command's id, or local-N); absent without
//	                         ; versions, or in a correction of usage priced by several
//	}
//
//	voucher-payload = {
//	  0: 4,                  ; kind: voucher
//	  1: id,                 ; voucher id: redeemed at most once, ever
//	  2: id,                 ; account credited
//	  3: uint .gt 0,         ; amount, nanos
//	  4: currency,
//	  5: ms,                 ; expiry: not redeemed at or after it
//	  ? 6: id,               ; issuer label
//	}
//
//	credit-payload = {        ; a top-up or a redeemed voucher, sent upstream
//	  0: 5,                  ; kind: credit
//	  1: id,                 ; gateway id
//	  2: seq,                ; the stream's seq, shared with the aggregates
//	  3: id,                 ; account credited
//	  4: uint .gt 0,         ; amount, nanos
//	  5: currency,
//	  6: ms,                 ; when
//	  7: "top_up" / "voucher",
//	  8: tstr .size (1..128),; the top-up's reference or the voucher's id
//	  ? 14: uint .gt 0,      ; stream epoch
//	}
//
//	restore-payload = {       ; a restored gateway's announcement: the first record of its new stream
//	  0: 10,                 ; kind: restore
//	  1: id,                 ; gateway id
//	  2: seq,                ; the new stream's seq, shared with the aggregates
//	  3: uint,               ; the backup's stream epoch (same key id)
//	  4: uint,               ; the backup's last seq in that stream: later ones are superseded
//	  5: ms,                 ; when the backup was restored
//	  14: uint .gt 0,        ; the new stream epoch (not the backup's)
//	}
//
//	hold-payload = {          ; a ticket held by a plausibility rule, and what became of it
//	  0: 6,                  ; kind: hold
//	  1: id,                 ; gateway id
//	  2: seq,                ; the stream's seq, shared with the aggregates
//	  3: id,                 ; device
//	  4: seq,                ; the held ticket's seq
//	  5: id,                 ; account
//	  6: id,                 ; provider
//	  7: "held" / "released" / "voided",
//	  8: 65 / 67 / 70 / 73 / 74 / 91,  ; the rule: register_backwards, clock_skew, register_jump,
//	                         ; rate_too_high, register_fault, grant_exceeded (usage under a
//	                         ; grant that neither the grant nor the balance covered)
//	  9: [1*16 [name, uint]],; usage held per meter, in units
//	  ? 10: uint .gt 0,      ; released: the amount then charged, nanos (also in the aggregates)
//	  11: currency,
//	  12: ms,                ; when it was held, released or voided (gateway clock)
//	  ? 13: tstr .regexp "[ -~]{1,64}",  ; the operator's note
//	  ? 14: uint .gt 0,      ; stream epoch
//	}
//
//	commitment-payload = {    ; in a COSE_Sign1 (the device's Ed25519 key) or COSE_Mac0 (its ticket key)
//	  0: 7,                  ; kind: chain commitment
//	  1: id,                 ; device
//	  2: bstr .size 8,       ; chain id, random
//	  3: 1..2147483647,      ; chain number: a device's chains in order; a payword's
//	                         ; ticket seq is number × 2^32 + index
//	  4: name,               ; meter
//	  5: uint .gt 0,         ; units per step
//	  6: 1..4294967295,      ; length n: indexes 1..n
//	  7: bstr .size 32,      ; anchor w0 = H^n(seed)
//	  8: uint,               ; the register at index 0
//	  9: ms,                 ; expiry: no payword of the chain is accepted at or after it
//	  ? 10: uint .gt 0,      ; register epoch
//	}
//
//	payword-ticket = {        ; a bare CBOR map, not a COSE message: the payword is its own proof
//	  0: 8,                  ; kind: payword
//	  1: id,                 ; device
//	  2: bstr .size 8,       ; chain id
//	  3: 1..4294967295,      ; index i
//	  4: bstr .size 32,      ; w_i
//	}
//
//	progress-payload = {      ; in a COSE_Sign1 by the gateway's key
//	  0: 9,                  ; kind: chain progress
//	  1: id,                 ; gateway id
//	  2: seq,                ; the stream's seq, shared with the aggregates
//	  3: id,                 ; provider
//	  4: id,                 ; account
//	  5: bstr .size (1..512),; the device's chain commitment (a COSE message)
//	  6: uint,               ; from: the chain's index as it entered the window (0: the anchor)
//	  7: bstr .size 32,      ; w_from
//	  8: 1..4294967295,      ; to: its last index accepted in the window, > from
//	  9: bstr .size 32,      ; w_to
//	  ? 10: uint .gt 0,      ; the seq of the aggregate whose window holds the usage
//	                         ; (absent only from gateways older than it)
//	  ? 14: uint .gt 0,      ; stream epoch
//	}
//
//	band     = [tstr .regexp "[ -~]{1,24}", uint, uint]   ; name ("tier 1", "window peak", "free",
//	                                               ; "minimum", "unsplit"), quantity, nanos
//	id       = tstr .regexp "[A-Za-z0-9._-]{1,64}"
//	name     = tstr .regexp "[A-Za-z0-9._-]{1,32}"
//	currency = tstr .regexp "[A-Za-z0-9._-]{1,8}"    ; ISO 4217 code, e.g. "EUR"
//	seq      = 1..9223372036854775807              ; a device that reached the top can send nothing
//	                                               ; newer: it is provisioned again under a new id
//	ms       = uint .gt 0                          ; Unix time in milliseconds
//	nanos    = uint                                ; 1e-9 of the currency unit
//	status   = 0..5                                ; 5: held (a plausibility rule; reason says which)
//	reason   = 1..65535
//
// # Aggregate streams
//
// A gateway's aggregates form one stream, named by the key id of the key
// that signs them (the kid) and a stream epoch (key 14): a random number
// made when the gateway creates its state file. Within a stream, seqs are
// gapless from 1. Receivers book each (kid, epoch, seq) exactly once:
//
//   - the same (kid, epoch, seq) with the same bytes is a duplicate: booked
//     already, answered as such;
//   - the same (kid, epoch, seq) with other bytes is a conflict: refused,
//     kept aside, counted, logged and reported, never booked and never
//     called a duplicate;
//   - a new epoch from a kid already seen is a stream reset (the gateway
//     lost, replaced or restored its state file): reported with the last
//     seq of the epoch before it, and booked;
//   - a restore record (kind 10), the first record of a restored gateway's
//     new stream, names the backup's stream and the last seq the backup
//     holds: the receiver takes what that stream numbered later out of the
//     payable books (superseded_by_restore, reported with its amount), so
//     the usage the devices bring again into the new stream is paid once;
//   - the gateway id (key 1) is bound to the kid: each trusted key speaks
//     for one gateway id, and an aggregate that claims another is refused.
//
// The default gateway id is "gw-" and the kid in hex (DefaultGatewayID),
// so gateways left at their defaults never share one. An aggregate
// without key 14 has epoch 0 and was made by a gateway whose state file
// is older than stream epochs; it is read and booked like any other. The
// idempotency key upstreams deduplicate on is StreamID.Key: "KID.EPOCH/SEQ".
// Credits, hold, chain progress and restore records share the stream's
// seqs with the aggregates, so a receiver must take every kind to see the
// stream without gaps.
//
// # Encoding
//
// Every message is encoded deterministically (RFC 8949 section 4.2.1):
// shortest-form arguments, definite lengths, map keys in ascending order, no
// optional field written with its default value, no tags but the outer COSE
// tag. Encoders here produce exactly that; both decoders (the canonical
// reader here and package strict for the gateway) refuse anything else, so
// one message has one encoding and one hash.
//
// # Limits
//
// A ticket is at most MaxTicketSize bytes, a receipt MaxReceiptSize, an
// aggregate MaxAggregateSize, a hold record MaxHoldSize; a ticket carries 1..MaxReadings readings;
// identifiers are bounded as the CDDL says. Every refusal is an *Error
// whose Reason a receipt carries.
//
// # Device path
//
// This package imports only the standard library, uses no reflection and
// no goroutines, and compiles with TinyGo. The encoders append into caller
// buffers and allocate nothing; Encoder holds the scratch space for
// signing. The gateway decodes untrusted bytes with package strict.
package protocol
