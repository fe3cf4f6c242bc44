package ledger

import "encoding/binary"

// The state file's schema: buckets, keys and values. Parts are joined with a 0 byte, which no identifier contains
// (identifiers are [A-Za-z0-9._-]); numbers are 8-byte big-endian so keys
// sort in numeric order.
//
//	meta        "aggregate-seq" → last aggregate seq (8 bytes)
//	devices     device → device state: last accepted seq, each meter's last reading
//	tickets     device 0 seq → an accepted ticket: its charge and balance, its
//	            Merkle leaf keys, and its bytes as received (until pruned)
//	charges     account 0 meter → metering.ChargeState
//	accounts    account → metering.Account
//	entries     account 0 seq → metering.Entry
//	windows     provider 0 account 0 meter → metering.WindowState
//	sealed      aggregate seq → sealed window or correction (the outbox)
//	slots       provider 0 account 0 meter 0 slot start → aggregate seq of the last window sealed in that slot
//	outbox      aggregate seq → the signed aggregate, until every upstream confirmed it
//	meta        "upstream/" name → the last aggregate seq that upstream confirmed
//	leaves      provider 0 account 0 meter 0 window start(8) index(8) → ticket hash(32) device/seq
//	            (a correction's one leaf, before version 9: "c" 0 aggregate seq(8) 0(8);
//	            a fold's leaves, version 9: "f" 0 fold id(8) index(8))
//	sealedby    provider 0 account 0 meter 0 window start(8) → aggregate seq
//	            ("f" 0 fold id(8) → the aggregate seq of the correction the fold sealed as, version 9)
//	late        provider 0 account 0 meter 0 slot start(8) → metering.Fold: the late usage of a sealed
//	            slot, gathered into one correction until it seals (version 9)
//	meta        "fold-seq" → the last fold id (8 bytes, version 9)
//	meta        "stream-epoch" → the stream epoch (8 bytes), made with the file
//	meta        "pruned-through" → the last aggregate seq whose tickets were pruned
//	meta        "schema-version" → the schema version (8 bytes); absent in files of version 0
//	openings    account → its opening balance, written with the account's first record (version 2)
//	audit       seq(8) → an operator operation (Operation): what, when, by which credential (version 2)
//	refs        kind "/" reference → the audit seq of the operation that used it: the idempotency index (version 2)
//	spend       "account" 0 id / "device" 0 id → metering.Spent: spending in the current day and month (version 3)
//	credits     aggregate seq → a record that is not an aggregate (account, time) whose signed message is in the
//	            outbox under the same seq: a protocol.Credit (top-ups and vouchers, version 4) or a
//	            protocol.Hold (version 5); they go upstream in the aggregates' stream
//	holds       device 0 seq → a held ticket (holdRecord): its usage, rule and what the operator did (version 5)
//	folded      account 0 day(8) → FoldedDay: the account's entries of a UTC day, folded once pruned (version 5)
//	meta        "pruned-end", "audit-shipped", "folded/tickets", "folded/sealed", "folded/holds" → pruning's
//	            progress and the running totals of what it removed (see prune.go)
//	suspended   device → Suspension: a device the gateway suspended until an operator resumes it (version 5)
//	grants      device 0 meter → metering.Grant: the device's grant on the meter, open or last closed (version 10)
//	accounts    (version 10) an account's record may end with what its open grants reserve
//
// Values are the records of records.go and metering's state types, all in
// metering's state encoding (a version byte, then varints and strings).

// Buckets.
var (
	bucketMeta      = []byte("meta")
	bucketDevices   = []byte("devices")
	bucketTickets   = []byte("tickets")
	bucketCharges   = []byte("charges")
	bucketAccounts  = []byte("accounts")
	bucketEntries   = []byte("entries")
	bucketWindows   = []byte("windows")
	bucketSealed    = []byte("sealed")
	bucketSlotIndex = []byte("slots")
	bucketOutbox    = []byte("outbox")
	bucketLeaves    = []byte("leaves")
	bucketSealedBy  = []byte("sealedby")
	bucketOpenings  = []byte("openings")
	bucketAudit     = []byte("audit")
	bucketRefs      = []byte("refs")
	bucketSpend     = []byte("spend")
	// bucketRecords holds the outbox's records that are not aggregates;
	// named "credits" in the file, its first kind.
	bucketRecords   = []byte("credits")
	bucketHolds     = []byte("holds")
	bucketSuspended = []byte("suspended")
	bucketFolded    = []byte("folded")
	// bucketChains holds payword chains: each device's committed chains
	// ("c" device 0 chain id → the terms and the commitment; "s" device 0
	// chain id → how far it was spent and reported), its last chain number
	// ("n" device → u64), and the chains that moved since their last
	// progress record ("d" device 0 chain id → 1).
	bucketChains = []byte("chains")
	// bucketLate holds the folds: late usage of sealed slots, one
	// correction per slot and key until it seals (fold.go).
	bucketLate = []byte("late")
	// bucketGrants holds reservations (grants.go).
	bucketGrants = []byte("grants")
)

var allBuckets = [][]byte{bucketMeta, bucketDevices, bucketTickets, bucketCharges,
	bucketAccounts, bucketEntries, bucketWindows, bucketSealed, bucketSlotIndex, bucketOutbox,
	bucketLeaves, bucketSealedBy, bucketOpenings, bucketAudit, bucketRefs, bucketSpend, bucketRecords, bucketHolds, bucketSuspended, bucketFolded, bucketChains, bucketLate, bucketGrants,
	bucketControl, bucketTariffs}

// joinKey joins parts with 0 bytes.
func joinKey(parts ...string) []byte {
	n := len(parts)
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			k = append(k, 0)
		}
		k = append(k, p...)
	}
	return k
}

// seqKey is joinKey(parts...) followed by 0 and seq in 8 bytes big-endian.
func seqKey(seq uint64, parts ...string) []byte {
	k := joinKey(parts...)
	if len(parts) > 0 {
		k = append(k, 0)
	}
	return binary.BigEndian.AppendUint64(k, seq)
}

// getU64 decodes an 8-byte big-endian value; 0 if b is not 8 bytes.
func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// putU64 encodes v in 8 bytes big-endian.
func putU64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
