package protocol

// The control channel: money flows up, commands flow down. A provider
// signs commands with a control key its gateways trust; each is numbered
// in its target's sequence (one gateway, or a fleet group), applied
// exactly once and in order, and acknowledged by the gateway in its
// aggregate stream (applied, or refused with a reason).
//
//	command-payload = {       ; COSE_Sign1 by a provider's control key (Ed25519)
//	  0: 14,                 ; kind: command
//	  1: id,                 ; target: a gateway id, or a group's name with key 2
//	  ? 2: 1,                ; the target is a fleet group
//	  3: seq,                ; the command's number in its target's sequence: gapless from 1
//	  4: id,                 ; command id: unique, the idempotency key
//	  5: ms,                 ; not before
//	  6: ms,                 ; expiry, after not before
//	  7: "tariff_set" / "adjust" / "revoke_voucher" / "revoke_device" / "provision",
//	  ; tariff_set: the new version of the tariff file, and when it takes effect
//	  ? 8: tstr .size (1..65536),
//	  ? 9: ms,
//	  ; adjust (the adjustment of farthing account adjust, idempotent by its reference):
//	  ; for one gateway, never a group (it would move the money once per gateway)
//	  ? 10: id,              ; account
//	  ? 11: int .ne 0,       ; amount, nanos: negative debits
//	  ? 12: currency,
//	  ? 13: name,            ; reason code
//	  ? 14: tstr .size (1..128), ; reference
//	  ? 15: id,              ; the voucher it settles
//	  ; revoke_voucher: ids that must not be redeemed
//	  ? 16: [1*256 id],
//	  ; revoke_device: key ids
//	  ? 17: [1*256 bstr .size 8],
//	  ; provision: an Ed25519 device (an HMAC device's secret never travels), with its
//	  ; terms; its account is key 10
//	  ? 18: id,              ; device
//	  ? 19: bstr .size 32,   ; its public key
//	  ? 21: id,              ; provider
//	  ? 22: [1*16 [name, id]], ; meter → tariff, sorted by meter
//	}
//
//	command-ack-payload = {   ; COSE_Sign1 by the gateway key, in its aggregate stream
//	  0: 15,                 ; kind: command acknowledgement
//	  1: id,                 ; gateway id
//	  2: seq,                ; the stream's seq, shared with the aggregates
//	  3: id,                 ; the command's id
//	  4: id,                 ; its target
//	  ? 5: 1,                ; a group
//	  6: seq,                ; its seq in the target's sequence
//	  7: 0 / 1,              ; 0 applied, 1 refused
//	  ? 8: reason,           ; why refused (required with 1)
//	  9: ms,                 ; when
//	  10: name,              ; the command's action (key 7 of the command, as it
//	                         ; named it: one this gateway does not know is refused
//	                         ; command_invalid)
//	  ? 11: 1,               ; local: no provider's command but an operator's change
//	                         ; made here (key 3 names it, "local-N"; key 6 is N)
//	  ? 14: uint .gt 0,      ; stream epoch
//	}
type Command struct {
	Target    string `json:"target"`
	Group     bool   `json:"group,omitempty"`
	Seq       uint64 `json:"seq"`
	ID        string `json:"id"`
	NotBefore uint64 `json:"not_before_ms"`
	Expiry    uint64 `json:"expiry_ms"`
	Action    string `json:"action"`
	// tariff_set
	Tariffs   string `json:"tariffs,omitempty"`
	Effective uint64 `json:"effective_ms,omitempty"`
	// adjust
	Account  string `json:"account,omitempty"`
	Amount   int64  `json:"amount_nanos,omitempty"`
	Currency string `json:"currency,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Ref      string `json:"ref,omitempty"`
	Voucher  string `json:"voucher,omitempty"`
	// revoke_voucher, revoke_device
	Vouchers []string `json:"vouchers,omitempty"`
	KeyIDs   [][]byte `json:"key_ids,omitempty"`
	// provision (Account is the device's account)
	Device    string       `json:"device,omitempty"`
	PublicKey []byte       `json:"public_key,omitempty"`
	Provider  string       `json:"provider,omitempty"`
	Meters    []MeterTerms `json:"meters,omitempty"`
}

// MeterTerms is a provisioned device's tariff for one meter.
type MeterTerms struct {
	Meter  string `json:"meter"`
	Tariff string `json:"tariff"`
}

// Command actions.
const (
	ActionTariffSet     = "tariff_set"
	ActionAdjust        = "adjust"
	ActionRevokeVoucher = "revoke_voucher"
	ActionRevokeDevice  = "revoke_device"
	ActionProvision     = "provision"
)

// ValidAction reports whether s is one of the command actions.
func ValidAction(s string) bool {
	switch s {
	case ActionTariffSet, ActionAdjust, ActionRevokeVoucher, ActionRevokeDevice, ActionProvision:
		return true
	}
	return false
}

// Limits of a command.
const (
	// MaxCommandSize bounds an encoded command: a tariff file travels in it.
	MaxCommandSize = 72 << 10
	// MaxCommandTariffs bounds a tariff_set's tariff file.
	MaxCommandTariffs = 64 << 10
	// MaxCommandList bounds the ids or key ids one revocation lists.
	MaxCommandList = 256
)

// Command payload keys.
const (
	cmdTarget, cmdGroup, cmdSeq, cmdID, cmdNotBefore, cmdExpiry, cmdAction = 1, 2, 3, 4, 5, 6, 7
	cmdTariffs, cmdEffective                                               = 8, 9
	cmdAccount, cmdAmount, cmdCurrency, cmdReason, cmdRef, cmdVoucher      = 10, 11, 12, 13, 14, 15
	cmdVouchers, cmdKeyIDs                                                 = 16, 17
	cmdDevice, cmdPublicKey, cmdProvider, cmdMeters                        = 18, 19, 21, 22
)

// Validate checks c against the rules of the wire format: its header,
// then exactly the fields of its action.
func (c *Command) Validate() error {
	if err := checkNameString(c.Target, MaxDeviceIDLen, "command target"); err != nil {
		return err
	}
	if err := checkNameString(c.ID, MaxDeviceIDLen, "command id"); err != nil {
		return err
	}
	if c.Seq == 0 || c.Seq > MaxSeq || c.NotBefore == 0 || c.Expiry <= c.NotBefore {
		return newError(ReasonFieldRange, "a command has a seq, a not-before and a later expiry")
	}
	var ok bool
	switch c.Action {
	case ActionTariffSet:
		ok = len(c.Tariffs) > 0 && len(c.Tariffs) <= MaxCommandTariffs && c.Effective != 0
	case ActionAdjust: // one gateway's: at a group it would move the money once per gateway
		ok = !c.Group && c.Amount != 0 && ValidName(c.Account, MaxAccountLen) && ValidName(c.Currency, MaxCurrencyLen) &&
			ValidName(c.Reason, MaxReasonLen) && len(c.Ref) > 0 && len(c.Ref) <= MaxCreditRefLen && (c.Voucher == "" || ValidName(c.Voucher, MaxDeviceIDLen))
	case ActionRevokeVoucher:
		ok = len(c.Vouchers) > 0 && len(c.Vouchers) <= MaxCommandList
		for _, v := range c.Vouchers {
			ok = ok && ValidName(v, MaxDeviceIDLen)
		}
	case ActionRevokeDevice:
		ok = len(c.KeyIDs) > 0 && len(c.KeyIDs) <= MaxCommandList
		for _, k := range c.KeyIDs {
			ok = ok && len(k) == KeyIDLen
		}
	case ActionProvision:
		ok = ValidName(c.Device, MaxDeviceIDLen) && len(c.PublicKey) == 32 && ValidName(c.Account, MaxAccountLen) &&
			ValidName(c.Provider, MaxDeviceIDLen) && len(c.Meters) > 0 && len(c.Meters) <= MaxReadings
		for i, m := range c.Meters { // sorted by meter, each once
			ok = ok && ValidName(m.Meter, MaxMeterNameLen) && ValidName(m.Tariff, MaxDeviceIDLen) && (i == 0 || c.Meters[i-1].Meter < m.Meter)
		}
	default:
		return newError(ReasonFieldRange, "unknown command action")
	}
	if !ok || !c.onlyFieldsOf() {
		return newError(ReasonFieldRange, "command "+c.Action+": its fields are missing, out of range, or another action's")
	}
	return nil
}

// onlyFieldsOf reports whether c sets no field of another action.
func (c *Command) onlyFieldsOf() bool {
	tariff := c.Tariffs != "" || c.Effective != 0
	adjust := c.Amount != 0 || c.Currency != "" || c.Reason != "" || c.Ref != "" || c.Voucher != ""
	provision := c.Device != "" || c.PublicKey != nil || c.Provider != "" || c.Meters != nil
	account := c.Account != ""
	switch c.Action {
	case ActionTariffSet:
		return !adjust && !provision && !account && c.Vouchers == nil && c.KeyIDs == nil
	case ActionAdjust:
		return !tariff && !provision && c.Vouchers == nil && c.KeyIDs == nil
	case ActionRevokeVoucher:
		return !tariff && !adjust && !provision && !account && c.KeyIDs == nil
	case ActionRevokeDevice:
		return !tariff && !adjust && !provision && !account && c.Vouchers == nil
	}
	return !tariff && !adjust && c.Vouchers == nil && c.KeyIDs == nil // provision
}

// AppendCommandPayload validates c and appends its deterministic payload.
func AppendCommandPayload(dst []byte, c *Command) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return dst, err
	}
	w := fields{dst: dst}
	w.text(cmdTarget, c.Target)
	w.flag(cmdGroup, c.Group)
	w.uint(cmdSeq, c.Seq)
	w.text(cmdID, c.ID)
	w.uint(cmdNotBefore, c.NotBefore)
	w.uint(cmdExpiry, c.Expiry)
	w.text(cmdAction, c.Action)
	w.text(cmdTariffs, c.Tariffs)
	w.uint(cmdEffective, c.Effective)
	w.text(cmdAccount, c.Account)
	if c.Amount != 0 {
		w.key(cmdAmount)
		w.body = appendInt(w.body, c.Amount)
	}
	w.text(cmdCurrency, c.Currency)
	w.text(cmdReason, c.Reason)
	w.text(cmdRef, c.Ref)
	w.text(cmdVoucher, c.Voucher)
	if c.Vouchers != nil {
		w.key(cmdVouchers)
		w.body = appendHead(w.body, majorArray, uint64(len(c.Vouchers)))
		for _, v := range c.Vouchers {
			w.body = appendText(w.body, v)
		}
	}
	if c.KeyIDs != nil {
		w.key(cmdKeyIDs)
		w.body = appendHead(w.body, majorArray, uint64(len(c.KeyIDs)))
		for _, k := range c.KeyIDs {
			w.body = appendBytes(w.body, k)
		}
	}
	w.text(cmdDevice, c.Device)
	if c.PublicKey != nil {
		w.key(cmdPublicKey)
		w.body = appendBytes(w.body, c.PublicKey)
	}
	w.text(cmdProvider, c.Provider)
	if c.Meters != nil {
		w.key(cmdMeters)
		w.body = appendHead(w.body, majorArray, uint64(len(c.Meters)))
		for _, m := range c.Meters {
			w.body = appendText(appendHead(w.body, majorArray, 2), m.Meter)
			w.body = appendText(w.body, m.Tariff)
		}
	}
	return w.finish(KindCommand), nil
}

// SignCommand validates c and returns it signed with the provider's
// control key s (Ed25519): a tagged COSE_Sign1 of at most MaxCommandSize.
func SignCommand(c *Command, s Signer) ([]byte, error) {
	if s.Algorithm() != AlgEdDSA {
		return nil, newError(ReasonUnsupportedAlg, "commands are signed with EdDSA")
	}
	p, err := AppendCommandPayload(nil, c)
	if err != nil {
		return nil, err
	}
	prot := AppendProtected(nil, AlgEdDSA, s.KeyID())
	sig, err := s.Sign(nil, AppendToBeSigned(nil, AlgEdDSA, prot, p))
	if err != nil {
		return nil, err
	}
	b := AppendEnvelope(nil, &Envelope{Alg: AlgEdDSA, KeyID: s.KeyID(), Protected: prot, Payload: p, Signature: sig})
	if len(b) > MaxCommandSize {
		return nil, newError(ReasonTooLarge, "command is larger than its limit")
	}
	return b, nil
}

// CommandAck is a gateway's acknowledgement of a command, in its
// aggregate stream: applied, or refused with the reason.
type CommandAck struct {
	Gateway string `json:"gateway"`
	Seq     uint64 `json:"seq"`
	Command string `json:"command"`
	Target  string `json:"target"`
	Group   bool   `json:"group,omitempty"`
	Number  uint64 `json:"command_seq"`
	Refused bool   `json:"refused,omitempty"`
	Reason  Reason `json:"reason,omitempty"`
	Time    uint64 `json:"time_ms"`
	// Action is the command's action as the command named it (for a
	// local change, what it changed: tariff_set).
	Action string `json:"action"`
	// Local marks a change an operator made at the gateway by hand (a
	// local override): Command names it "local-N" and Number is N.
	Local bool   `json:"local,omitempty"`
	Epoch uint64 `json:"stream_epoch,omitempty"`
}

// Command acknowledgement payload keys.
const (
	ackGateway, ackSeq, ackCommand, ackTarget, ackGroup, ackNumber, ackOutcome, ackReason, ackTime = 1, 2, 3, 4, 5, 6, 7, 8, 9
	ackAction, ackLocal, ackEpoch                                                                  = 10, 11, 14
)

// Validate checks a against the rules of the wire format.
func (a *CommandAck) Validate() error {
	for _, f := range [...]struct{ v, what string }{{a.Gateway, "gateway id"}, {a.Command, "command id"}, {a.Target, "command target"}} {
		if err := checkNameString(f.v, MaxDeviceIDLen, f.what); err != nil {
			return err
		}
	}
	switch {
	case a.Seq == 0 || a.Seq > MaxSeq || a.Number == 0 || a.Number > MaxSeq || a.Time == 0:
		return newError(ReasonFieldRange, "an acknowledgement has a seq, the command's seq and a time")
	case a.Refused != (a.Reason != ReasonNone) || (a.Refused && !a.Reason.Valid()):
		return newError(ReasonFieldRange, "a refused command has a reason, an applied one none")
	case !ValidName(a.Action, MaxReasonLen):
		return newError(ReasonFieldRange, "an acknowledgement names its command's action")
	}
	return nil
}

// AppendCommandAckPayload validates a and appends its deterministic
// payload.
func AppendCommandAckPayload(dst []byte, a *CommandAck) ([]byte, error) {
	if err := a.Validate(); err != nil {
		return dst, err
	}
	w := fields{dst: dst}
	w.text(ackGateway, a.Gateway)
	w.uint(ackSeq, a.Seq)
	w.text(ackCommand, a.Command)
	w.text(ackTarget, a.Target)
	w.flag(ackGroup, a.Group)
	w.uint(ackNumber, a.Number)
	w.key(ackOutcome)
	if a.Refused {
		w.body = appendUint(w.body, 1)
	} else {
		w.body = appendUint(w.body, 0)
	}
	w.uint(ackReason, uint64(a.Reason))
	w.uint(ackTime, a.Time)
	w.text(ackAction, a.Action)
	w.flag(ackLocal, a.Local)
	w.uint(ackEpoch, a.Epoch)
	return w.finish(KindCommandAck), nil
}

// AppendCommandAck validates a, signs it with the gateway's key and
// appends the tagged COSE_Sign1 to dst.
func (e *Encoder) AppendCommandAck(dst []byte, a *CommandAck, s Signer) ([]byte, error) {
	if s.Algorithm() != AlgEdDSA {
		return dst, newError(ReasonUnsupportedAlg, "acknowledgements are signed with EdDSA")
	}
	p, err := AppendCommandAckPayload(e.payload(), a)
	if err != nil {
		return dst, err
	}
	return e.seal(dst, s, p, MaxAggregateSize)
}

// fields writes a payload's fields in ascending key order, leaving out
// the absent ones, and heads them with the map's size once done.
type fields struct {
	dst, body []byte
	n         uint64
}

func (w *fields) key(k uint64) {
	w.body = appendUint(w.body, k)
	w.n++
}

func (w *fields) text(k uint64, s string) {
	if s != "" {
		w.key(k)
		w.body = appendText(w.body, s)
	}
}

func (w *fields) uint(k, v uint64) {
	if v != 0 {
		w.key(k)
		w.body = appendUint(w.body, v)
	}
}

func (w *fields) flag(k uint64, set bool) {
	if set {
		w.uint(k, 1)
	}
}

// finish appends the map head (with key 0, the kind), then the fields.
func (w *fields) finish(k Kind) []byte {
	dst := appendHead(w.dst, majorMap, w.n+1)
	dst = append(dst, keyKind, byte(k))
	return append(dst, w.body...)
}
