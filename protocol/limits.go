package protocol

// Limits of the wire format. A message over any of them is refused before
// its signature is checked. They bound what a parser allocates and how much
// an attacker can make the gateway read.
const (
	// MaxTicketSize bounds an encoded ticket, envelope included. A ticket
	// with every field at its limit is 1,026 bytes.
	MaxTicketSize = 1280
	// MaxReceiptSize bounds an encoded receipt.
	MaxReceiptSize = 384
	// MaxVoucherSize bounds an encoded voucher: one with every field at
	// its limit, bound to a gateway and a device, is under it (a test keeps
	// it so).
	MaxVoucherSize = 512
	// MaxAggregateSize bounds an encoded aggregate. One with every field
	// at its limit, MaxAggregateBands bands included, is 812 bytes.
	MaxAggregateSize = 1024
	// MaxHoldSize bounds an encoded hold record: one with every field at
	// its limit is under it (a test keeps it so).
	MaxHoldSize = 1280
	// MaxMessageSize is the largest of the above: what a transport should
	// accept before handing bytes to a decoder.
	MaxMessageSize = MaxTicketSize

	// MaxReadings is the most readings one ticket carries; at least one is
	// required.
	MaxReadings = 16
	// MaxDeviceIDLen bounds device, gateway and provider ids (bytes).
	MaxDeviceIDLen = 64
	// MaxMeterNameLen bounds a meter name (bytes).
	MaxMeterNameLen = 32
	// MaxAccountLen bounds an account id (bytes).
	MaxAccountLen = 64
	// MaxSessionLen bounds a session id (bytes).
	MaxSessionLen = 64
	// MaxCurrencyLen bounds a currency code (bytes); ISO 4217 codes are 3.
	MaxCurrencyLen = 8
	// KeyIDLen is the length of every Farthing key id (bytes).
	KeyIDLen = 8
	// MaxKeyIDLen bounds a kid accepted from the wire (bytes).
	MaxKeyIDLen = 16
	// MaxAggregateBands bounds the price bands one aggregate lists.
	MaxAggregateBands = 8
	// MaxBandNameLen bounds a price band's name (bytes of printable ASCII).
	MaxBandNameLen = 24
	// MerkleRootLen is the length of an aggregate's Merkle root (SHA-256).
	MerkleRootLen = 32
)

// checkName checks an identifier: 1..max bytes of [A-Za-z0-9._-]. These
// ids appear in MQTT topics, metric labels and file names, so the alphabet
// excludes '/', '+', '#', spaces and control characters.
func checkName(p []byte, max int, what string) error {
	if len(p) == 0 {
		return newError(ReasonMissingField, what+" is empty")
	}
	if len(p) > max {
		return newError(ReasonStringTooLong, what+" is too long")
	}
	for _, c := range p {
		if !nameByte(c) {
			return newError(ReasonBadName, what+" has a character outside [A-Za-z0-9._-]")
		}
	}
	return nil
}

func checkNameString(s string, max int, what string) error {
	if len(s) == 0 {
		return newError(ReasonMissingField, what+" is empty")
	}
	if len(s) > max {
		return newError(ReasonStringTooLong, what+" is too long")
	}
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return newError(ReasonBadName, what+" has a character outside [A-Za-z0-9._-]")
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// ValidName reports whether s is a valid identifier of at most max bytes.
func ValidName(s string, max int) bool { return checkNameString(s, max, "") == nil }
