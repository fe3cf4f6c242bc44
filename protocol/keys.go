package protocol

// KeyIDOf returns the key id of a key: the first KeyIDLen bytes of
// SHA-256("farthing kid v1" || alg || key), where alg is the COSE algorithm
// as a CBOR integer and key is the Ed25519 public key or the HMAC key. For
// an HMAC key the id reveals nothing usable about the key.
func KeyIDOf(alg Algorithm, key []byte) [KeyIDLen]byte {
	h := newSHA256()
	h.Write([]byte("farthing kid v1"))
	var a [9]byte
	h.Write(appendInt(a[:0], int64(alg)))
	h.Write(key)
	var sum [hashSize]byte
	h.Sum(sum[:0])
	var id [KeyIDLen]byte
	copy(id[:], sum[:])
	return id
}

// KeyPurpose names one use of a device's master secret. Each purpose gets
// its own key through HKDF, so no secret serves two purposes.
type KeyPurpose string

// The purposes of device keys derived from one master secret.
const (
	// PurposeTicket is the HMAC 256/256 key that MACs tickets.
	PurposeTicket KeyPurpose = "farthing v1 ticket mac"
	// PurposeReceipt is the HMAC 256/256 key that MACs receipts.
	PurposeReceipt KeyPurpose = "farthing v1 receipt mac"
	// PurposeDTLSPSK is the DTLS pre-shared key.
	PurposeDTLSPSK KeyPurpose = "farthing v1 dtls psk"
	// PurposeMQTTPassword is the MQTT password (used hex-encoded).
	PurposeMQTTPassword KeyPurpose = "farthing v1 mqtt password"
)

// MasterSecretSize is the size of a device master secret, in bytes.
const MasterSecretSize = 32

// DeriveKey derives the 32-byte key for one purpose from a device's master
// secret with HKDF-SHA256 (RFC 5869): no salt, info = the purpose label.
// Every device has its own random master secret, so derived keys differ
// between devices as well as between purposes.
func DeriveKey(master []byte, purpose KeyPurpose) ([]byte, error) {
	if len(master) != MasterSecretSize {
		return nil, ErrKeySize
	}
	return hkdfKey(master, string(purpose)), nil
}

// PurposeDeviceMaster is the label that turns a fleet's device root into
// one device's master secret (DeviceMaster).
const PurposeDeviceMaster KeyPurpose = "farthing v1 device master "

// DeviceMaster derives a device's master secret from a fleet's device
// root (a 32-byte secret the provider and its gateways hold) with
// HKDF-SHA256, info = PurposeDeviceMaster followed by the device id. A
// device provisioned by a control command has this master: the provider
// flashes it, every gateway of the fleet derives it, and no secret travels
// in the command.
func DeviceMaster(root []byte, device string) ([]byte, error) {
	if len(root) != MasterSecretSize {
		return nil, ErrKeySize
	}
	return hkdfKey(root, string(PurposeDeviceMaster)+device), nil
}
