package protocol

// Voucher is a signed top-up: a provider (or the platform) sells it, the
// customer brings it to a gateway, and the gateway credits its amount to
// its account once, ever. It is a COSE_Sign1 by an issuer's Ed25519 key
// that the gateway trusts, so it works with the uplink down.
//
//	voucher-payload = {
//	  0: 4,                 ; kind: voucher
//	  1: id,                ; voucher id: redeemed at most once, by any gateway
//	  2: id,                ; account credited
//	  3: uint .gt 0,        ; amount, nano-units of currency
//	  4: currency,
//	  5: ms,                ; expiry, Unix milliseconds: not redeemed at or after it
//	  ? 6: id,              ; issuer, a label (the kid says who signed)
//	  ? 7: id,              ; bound to this gateway id: no other gateway redeems it
//	  ? 8: id,              ; bound to this device: redeemed only when the device passes it on
//	}
//
// A bound voucher (keys 7 and 8, the way prepaid meter tokens are bound
// to one meter) cannot be redeemed twice even with every gateway offline:
// only one gateway's books can take it, and they take a voucher id once.
//
// Its text form (for a QR code, or copy and paste) is the COSE bytes in
// base64url without padding (VoucherText).
type Voucher struct {
	ID       string `json:"id"`
	Account  string `json:"account"`
	Amount   uint64 `json:"amount_nanos"`
	Currency string `json:"currency"`
	Expiry   uint64 `json:"expiry_ms"`
	Issuer   string `json:"issuer,omitempty"`
	Gateway  string `json:"gateway,omitempty"` // bound to this gateway id
	Device   string `json:"device,omitempty"`  // bound to this device
}

// Voucher payload keys.
const (
	vouID       = 1
	vouAccount  = 2
	vouAmount   = 3
	vouCurrency = 4
	vouExpiry   = 5
	vouIssuer   = 6
	vouGateway  = 7
	vouDevice   = 8
)

// Validate checks v against the limits and rules of the wire format.
func (v *Voucher) Validate() error {
	for _, f := range [...]struct {
		v    string
		max  int
		what string
	}{
		{v.ID, MaxDeviceIDLen, "voucher id"},
		{v.Account, MaxAccountLen, "account"},
		{v.Currency, MaxCurrencyLen, "currency"},
	} {
		if err := checkNameString(f.v, f.max, f.what); err != nil {
			return err
		}
	}
	for _, f := range [...]struct{ v, what string }{{v.Issuer, "issuer"}, {v.Gateway, "gateway"}, {v.Device, "device"}} {
		if f.v == "" {
			continue
		}
		if err := checkNameString(f.v, MaxDeviceIDLen, f.what); err != nil {
			return err
		}
	}
	if v.Amount == 0 || v.Amount > 1<<63-1 {
		return newError(ReasonFieldRange, "voucher amount must be in 1..2^63-1 nanos")
	}
	if v.Expiry == 0 {
		return newError(ReasonFieldRange, "voucher expiry must be set")
	}
	return nil
}

// AppendVoucherPayload validates v and appends its deterministic payload.
func AppendVoucherPayload(dst []byte, v *Voucher) ([]byte, error) {
	if err := v.Validate(); err != nil {
		return dst, err
	}
	n := 6
	for _, set := range [...]bool{v.Issuer != "", v.Gateway != "", v.Device != ""} {
		if set {
			n++
		}
	}
	dst = appendHead(dst, majorMap, uint64(n))
	dst = append(dst, keyKind, byte(KindVoucher))
	dst = appendUint(dst, vouID)
	dst = appendText(dst, v.ID)
	dst = appendUint(dst, vouAccount)
	dst = appendText(dst, v.Account)
	dst = appendUint(dst, vouAmount)
	dst = appendUint(dst, v.Amount)
	dst = appendUint(dst, vouCurrency)
	dst = appendText(dst, v.Currency)
	dst = appendUint(dst, vouExpiry)
	dst = appendUint(dst, v.Expiry)
	for _, f := range [...]struct {
		k uint64
		v string
	}{{vouIssuer, v.Issuer}, {vouGateway, v.Gateway}, {vouDevice, v.Device}} {
		if f.v != "" {
			dst = appendUint(dst, f.k)
			dst = appendText(dst, f.v)
		}
	}
	return dst, nil
}

// AppendVoucher validates v, signs it with the issuer's Ed25519 signer and
// appends the tagged COSE_Sign1 to dst.
func (e *Encoder) AppendVoucher(dst []byte, v *Voucher, s Signer) ([]byte, error) {
	if s.Algorithm() != AlgEdDSA {
		return dst, newError(ReasonUnsupportedAlg, "vouchers are signed with EdDSA")
	}
	p, err := AppendVoucherPayload(e.payload(), v)
	if err != nil {
		return dst, err
	}
	return e.seal(dst, s, p, MaxVoucherSize)
}

// VoucherText is a voucher's text form: its bytes in base64url without
// padding (RFC 4648 section 5).
func VoucherText(b []byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	out := make([]byte, 0, (len(b)*8+5)/6)
	var acc uint32
	bits := 0
	for _, c := range b {
		acc = acc<<8 | uint32(c)
		bits += 8
		for bits >= 6 {
			bits -= 6
			out = append(out, alphabet[acc>>uint(bits)&63])
		}
	}
	if bits > 0 {
		out = append(out, alphabet[acc<<uint(6-bits)&63])
	}
	return string(out)
}

// ParseVoucherText decodes VoucherText; spaces and line breaks in it (a
// code typed or pasted in parts) are skipped.
func ParseVoucherText(s string) ([]byte, error) {
	out := make([]byte, 0, len(s)*6/8)
	var acc uint32
	bits := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		var v byte
		switch {
		case c >= 'A' && c <= 'Z':
			v = c - 'A'
		case c >= 'a' && c <= 'z':
			v = c - 'a' + 26
		case c >= '0' && c <= '9':
			v = c - '0' + 52
		case c == '-':
			v = 62
		case c == '_':
			v = 63
		case c == ' ' || c == '\n' || c == '\r' || c == '\t':
			continue
		default:
			return nil, newError(ReasonMalformed, "voucher text: not base64url")
		}
		acc = acc<<6 | uint32(v)
		bits += 6
		if bits >= 8 {
			bits -= 8
			out = append(out, byte(acc>>uint(bits)))
		}
		if len(out) > MaxVoucherSize {
			return nil, newError(ReasonTooLarge, "voucher text: too long")
		}
	}
	if bits >= 6 || acc&(1<<uint(bits)-1) != 0 {
		return nil, newError(ReasonNonCanonical, "voucher text: bad ending")
	}
	return out, nil
}
