package protocol

// Restore is a restored gateway's announcement, the first record of its
// new stream: the stream of the backup (the same key, OldEpoch) is
// superseded after OldLastSeq, the last of its seqs the backup holds.
// Whatever that stream numbered after OldLastSeq was sealed by the
// gateway that was replaced, and the restored books never saw it: the
// devices' next tickets bring that usage again, into the new stream. A
// receiver takes those later records out of the payable books (and
// reports their amount), so nothing is paid twice. A COSE_Sign1 by the
// gateway key.
//
//	restore-payload = {
//	  0: 10,                ; kind: restore
//	  1: id,                ; gateway id
//	  2: seq,               ; the new stream's seq (shared with the aggregates)
//	  3: uint,              ; the backup's stream epoch (0: a stream from before epochs)
//	  4: uint,              ; the backup's last seq in that stream (0: none)
//	  5: ms,                ; when the backup was restored
//	  14: uint .gt 0,       ; the new stream epoch
//	}
type Restore struct {
	Gateway    string `json:"gateway"`
	Seq        uint64 `json:"seq"`
	OldEpoch   uint64 `json:"old_epoch"`
	OldLastSeq uint64 `json:"old_last_seq"`
	Time       uint64 `json:"time_ms"`
	Epoch      uint64 `json:"stream_epoch"`
}

// Restore payload keys.
const (
	rstGateway  = 1
	rstSeq      = 2
	rstOldEpoch = 3
	rstOldLast  = 4
	rstTime     = 5
	rstEpoch    = 14
)

// Validate checks r against the limits and rules of the wire format.
func (r *Restore) Validate() error {
	if err := checkNameString(r.Gateway, MaxDeviceIDLen, "gateway id"); err != nil {
		return err
	}
	if r.Seq == 0 || r.Seq > MaxSeq || r.OldLastSeq > MaxSeq {
		return newError(ReasonFieldRange, "seqs must be in 1..2^63-1")
	}
	if r.Epoch == 0 || r.Epoch == r.OldEpoch || r.Time == 0 {
		return newError(ReasonFieldRange, "a restore names a new epoch, other than the old one, and a time")
	}
	return nil
}

// AppendRestorePayload validates r and appends its deterministic payload.
func AppendRestorePayload(dst []byte, r *Restore) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return dst, err
	}
	dst = appendHead(dst, majorMap, 7)
	dst = append(dst, keyKind, byte(KindRestore))
	dst = appendUint(dst, rstGateway)
	dst = appendText(dst, r.Gateway)
	for _, f := range [...]struct{ k, v uint64 }{{rstSeq, r.Seq}, {rstOldEpoch, r.OldEpoch}, {rstOldLast, r.OldLastSeq},
		{rstTime, r.Time}, {rstEpoch, r.Epoch}} {
		dst = appendUint(dst, f.k)
		dst = appendUint(dst, f.v)
	}
	return dst, nil
}

// AppendRestore validates r, signs it with the gateway's signer and
// appends the tagged COSE_Sign1 to dst.
func (e *Encoder) AppendRestore(dst []byte, r *Restore, s Signer) ([]byte, error) {
	if s.Algorithm() != AlgEdDSA {
		return dst, newError(ReasonUnsupportedAlg, "restore records are signed with EdDSA")
	}
	p, err := AppendRestorePayload(e.payload(), r)
	if err != nil {
		return dst, err
	}
	return e.seal(dst, s, p, MaxAggregateSize)
}
