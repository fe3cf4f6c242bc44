// Package registry is the device registry: the devices.yaml file, each
// device's keys derived from its master secret, and provisioning (making a
// new device's secrets). The daemon, the CLI and the simulator use it; it
// links no broker, store or metrics, so a tool that only provisions or
// simulates devices stays small.
package registry

import (
	"bytes"
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/farthing-iot/farthing/internal/atomicfile"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// Entry is one device in the registry file (devices.yaml, mode 0600:
// it holds device secrets).
type Entry struct {
	ID string `yaml:"id"`
	// KeyType is "hmac" (tickets MAC'd with a key derived from Secret) or
	// "ed25519" (tickets signed; PublicKey verifies them).
	KeyType   string `yaml:"key_type"`
	PublicKey string `yaml:"public_key,omitempty"` // hex, ed25519 only
	// Secret is the device's master secret (hex): its ticket MAC key (hmac
	// devices), receipt MAC key and MQTT password are derived from it.
	Secret   string `yaml:"secret"`
	Account  string `yaml:"account"`
	Provider string `yaml:"provider"`
	// Tariffs maps each meter the device reports to a tariff id.
	Tariffs  map[string]string `yaml:"tariffs"`
	Disabled bool              `yaml:"disabled,omitempty"`
	// DailyCap bounds what the device may spend per day (decimal, in its
	// account's currency and time zone); none by default.
	DailyCap string `yaml:"daily_cap,omitempty"`
	// Plausibility gives some of the device's meters rules of their own,
	// replacing their tariff's (see metering.Rules).
	Plausibility map[string]*metering.Rules `yaml:"plausibility,omitempty"`
	// Revoked: the device's tickets are refused with reason key_revoked
	// and it cannot connect. Its key id is also in the file's revoked_keys.
	Revoked bool `yaml:"revoked,omitempty"`
	// Next is a ticket key the device is rotating to (see NextKey).
	Next *NextKey `yaml:"next_key,omitempty"`
	// Clock is where the device's tickets get their time: "device" (the
	// default: its own clock, refused clock_skew when far off) or
	// "gateway" (a device without a usable clock: the gateway dates each
	// ticket when it arrives, so a ticket delivered late is counted in a
	// later window, never twice).
	Clock string `yaml:"clock,omitempty"`
}

// ClockGateway is Entry.Clock for a device whose tickets the gateway dates.
const ClockGateway = "gateway"

// GatewayDated reports whether the gateway dates the device's tickets.
func (e Entry) GatewayDated() bool { return e.Clock == ClockGateway }

// NextKey is a ticket key a device rotates to. Until the rotation is
// committed (farthing device rotate --commit), tickets under either key
// are accepted — the old one only until the gateway has seen the device
// use the new one, or until Until, whichever comes first.
type NextKey struct {
	// PublicKey is the new Ed25519 public key (hex), for an ed25519 device.
	PublicKey string `yaml:"public_key,omitempty"`
	// Secret is the new master secret (hex), for an hmac device: its
	// ticket key, receipt key and MQTT password are derived from it; the
	// DTLS pre-shared key stays the old one's until the commit.
	Secret string `yaml:"secret,omitempty"`
	// Until (RFC 3339) ends the overlap: the old key is refused after it.
	Until string `yaml:"until"`
}

// File is the layout of devices.yaml.
type File struct {
	Devices []Entry `yaml:"devices"`
	// RevokedKeys are key ids (hex) never accepted again: those of
	// revoked devices and keys rotated out.
	RevokedKeys []string `yaml:"revoked_keys,omitempty"`

	lines []int // each device's line in the file, when read from one
}

// Device is a registry entry with its keys derived and parsed. It is kept
// small (a gateway holds every registered device): the master secret and
// the public key's hex are dropped once the keys are derived, the keys are
// held inline, and devices with the same meters and tariffs share one
// tariff map and their account and provider names.
type Device struct {
	Entry // Secret and PublicKey are cleared
	// DailyCapNanos is DailyCap parsed; 0 is none.
	DailyCapNanos metering.Nanos
	// keys: receipt key | MQTT password key | DTLS PSK | ticket key or
	// Ed25519 public key | key id. The slices the methods return alias it
	// and must not be changed.
	keys [keysLen]byte
	ed   bool // keys holds an Ed25519 public key, not an HMAC key
	next *nextKeys
}

// nextKeys are a rotating device's next keys, in the layout of keys, and
// the end of the overlap (Unix ms).
type nextKeys struct {
	keys  [keysLen]byte
	until int64
}

// Active reports whether the device may connect and send: not disabled,
// not revoked.
func (d *Device) Active() bool { return !d.Disabled && !d.Revoked }

// Rotation returns, for a device rotating its ticket key, the next key's
// id and the end of the overlap (Unix ms); ok is false otherwise.
func (d *Device) Rotation() (next [protocol.KeyIDLen]byte, until int64, ok bool) {
	if d.next == nil {
		return next, 0, false
	}
	return [protocol.KeyIDLen]byte(d.next.keys[offKID:keysLen]), d.next.until, true
}

// ForKey returns the device as seen through key id kid: the device
// itself, or, for its next key, a copy holding the next keys (ticket,
// receipt and MQTT password; the DTLS PSK stays the current one's).
func (d *Device) ForKey(kid []byte) *Device {
	if d.next == nil || !bytes.Equal(kid, d.next.keys[offKID:keysLen]) {
		return d
	}
	n := *d
	n.keys = d.next.keys
	copy(n.keys[offPSK:offKey], d.keys[offPSK:offKey])
	n.next = nil
	return &n
}

const (
	offReceipt = 0
	offMQTT    = offReceipt + 32
	offPSK     = offMQTT + 32
	offKey     = offPSK + 32
	offKID     = offKey + 32
	keysLen    = offKID + protocol.KeyIDLen
)

// KeyID returns the id of the device's ticket key.
func (d *Device) KeyID() []byte { return d.keys[offKID:keysLen:keysLen] }

// ReceiptKey returns the key that MACs the device's receipts.
func (d *Device) ReceiptKey() []byte { return d.keys[offReceipt:offMQTT:offMQTT] }

// DTLSPSK returns the DTLS pre-shared key (see dtlsPSKOf).
func (d *Device) DTLSPSK() []byte { return d.keys[offPSK:offKey:offKey] }

func (d *Device) mqttPassword() []byte { return d.keys[offMQTT:offPSK:offPSK] }

// Ed25519Key is the device's Ed25519 public key; nil for an HMAC device.
func (d *Device) Ed25519Key() ed25519.PublicKey {
	if !d.ed {
		return nil
	}
	return d.keys[offKey:offKID:offKID]
}

// ticketKey is the device's HMAC ticket key; nil for an Ed25519 device.
func (d *Device) ticketKey() []byte {
	if d.ed {
		return nil
	}
	return d.keys[offKey:offKID:offKID]
}

// NewVerifier returns a ticket verifier for the device that the caller may
// use from one goroutine.
func (d *Device) NewVerifier() (protocol.Verifier, error) {
	if d.ed {
		return strict.NewEd25519Verifier(d.Ed25519Key()) // ZIP-215, as everywhere in the gateway
	}
	return protocol.NewHMAC(d.ticketKey())
}

// CheckMQTTPassword compares in constant time; a rotating device may log
// in with its current or its next password.
func (d *Device) CheckMQTTPassword(p []byte) bool {
	var got [32]byte
	if len(p) != 2*len(got) {
		return false
	}
	if _, err := hex.Decode(got[:], p); err != nil {
		return false
	}
	ok := subtle.ConstantTimeCompare(got[:], d.mqttPassword()) == 1
	if d.next != nil {
		ok = subtle.ConstantTimeCompare(got[:], d.next.keys[offMQTT:offPSK]) == 1 || ok
	}
	return ok
}

// dtlsPSKOf derives a device's DTLS pre-shared key from its master secret:
// the first 32 hex digits of its PurposeDTLSPSK key, 128 bits as ASCII, so
// that tools which take a PSK only as text (libcoap's coap-client -k) can
// use it.
func dtlsPSKOf(master []byte) []byte {
	k, _ := protocol.DeriveKey(master, protocol.PurposeDTLSPSK)
	return []byte(hex.EncodeToString(k)[:32])
}

// Registry is an immutable snapshot of the device registry; reloading
// builds a new one.
type Registry struct {
	byID    map[string]*Device
	byKID   map[[protocol.KeyIDLen]byte]*Device
	revoked map[[protocol.KeyIDLen]byte]bool
	refused []Refusal
}

// KeyRevoked reports whether kid is one of the file's revoked keys.
func (r *Registry) KeyRevoked(kid []byte) bool {
	return len(kid) == protocol.KeyIDLen && r.revoked[[protocol.KeyIDLen]byte(kid)]
}

// Device returns the device with id, or nil.
func (r *Registry) Device(id string) *Device { return r.byID[id] }

// ByKeyID returns the device whose ticket key has this kid, or nil.
func (r *Registry) ByKeyID(kid []byte) *Device {
	if len(kid) != protocol.KeyIDLen {
		return nil
	}
	return r.byKID[[protocol.KeyIDLen]byte(kid)]
}

// Len is the number of devices.
func (r *Registry) Len() int { return len(r.byID) }

// Devices returns the devices sorted by id.
func (r *Registry) Devices() []*Device {
	out := make([]*Device, 0, len(r.byID))
	for _, d := range r.byID {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ReadFile reads devices.yaml; a missing file is an empty registry.
func ReadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return &File{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, path, err)
	}
	// Each device's line, so that errors found later name it.
	var root yaml.Node
	if yaml.Unmarshal(b, &root) == nil && len(root.Content) == 1 {
		doc := root.Content[0]
		for i := 0; i+1 < len(doc.Content); i += 2 {
			if doc.Content[i].Value == "devices" {
				for _, n := range doc.Content[i+1].Content {
					f.lines = append(f.lines, n.Line)
				}
			}
		}
	}
	return &f, nil
}

// WriteFile replaces devices.yaml atomically (write, fsync, rename, fsync
// of the directory), so a gateway watching it never reads half a file.
func WriteFile(path string, f *File) error {
	b, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// addNextKey derives the key device d rotates to (its entry e's Next)
// and returns its key id; bad makes the error that names the field at
// fault.
func (r *Registry) addNextKey(d *Device, e Entry, master []byte, kid [protocol.KeyIDLen]byte, bad func(field, format string, args ...any) *Refusal) ([protocol.KeyIDLen]byte, *Refusal) {
	nk := e.Next
	var nkid [protocol.KeyIDLen]byte
	until, err := time.Parse(time.RFC3339, nk.Until)
	if err != nil {
		return nkid, bad("next_key.until", "%q: want RFC 3339", nk.Until)
	}
	nm, pub := master, nk.PublicKey
	if e.KeyType == "hmac" {
		if nm, err = hex.DecodeString(nk.Secret); err != nil || len(nm) != protocol.MasterSecretSize {
			return nkid, bad("next_key.secret", "want %d bytes in hex", protocol.MasterSecretSize)
		}
	}
	d.next = &nextKeys{until: until.UnixMilli()}
	if d.next.keys, err = deriveKeys(nm, e.KeyType, pub); err != nil {
		return nkid, bad("next_key."+keyField(err), "%v", err)
	}
	nkid = [protocol.KeyIDLen]byte(d.next.keys[offKID:keysLen])
	if nkid == kid {
		return nkid, bad("next_key", "the next key is the current one")
	}
	if o := r.byKID[nkid]; o != nil {
		return nkid, bad("next_key", "same key id as device %q", o.ID)
	}
	return nkid, nil
}

// Refusal is a registry entry that was not loaded, and why: the rest of
// the file loads without it, so one bad line never takes the other
// devices down.
type Refusal struct {
	Index   int    `json:"index"` // in the file's devices list
	Where   string `json:"where"` // the file and line
	ID      string `json:"id"`
	Field   string `json:"field"`
	Problem string `json:"problem"`
	// Kept: the device serves on with its entry from an earlier file.
	Kept bool `json:"kept,omitempty"`
	err  error
}

func (f Refusal) Error() string { return f.err.Error() }

func (f Refusal) Unwrap() error { return f.err }

// Refused returns the entries Build did not load, in file order.
func (r *Registry) Refused() []Refusal { return r.refused }

// Keep puts back device d, loaded from an earlier file, in place of its
// entry that this file refused (an edit with a typo does not take a
// serving device down): its refusal is marked Kept. It reports false, and
// changes nothing, if no refused entry has d's id, its terms no longer fit
// the configuration known, or another device now has one of its keys.
func (r *Registry) Keep(d *Device, known Known) bool {
	i := slices.IndexFunc(r.refused, func(f Refusal) bool { return f.ID == d.ID && !f.Kept })
	if i < 0 || r.byID[d.ID] != nil {
		return false
	}
	if _, err := CheckTerms(d.Entry, known); err != nil {
		return false
	}
	kids := [][protocol.KeyIDLen]byte{[protocol.KeyIDLen]byte(d.keys[offKID:keysLen])}
	if d.next != nil {
		kids = append(kids, [protocol.KeyIDLen]byte(d.next.keys[offKID:keysLen]))
	}
	for _, k := range kids {
		if r.byKID[k] != nil || (r.revoked[k] && !d.Revoked) {
			return false
		}
	}
	r.byID[d.ID] = d
	for _, k := range kids {
		r.byKID[k] = d
	}
	r.refused[i].Kept = true
	return true
}

// Build checks every entry against the accounts, providers and tariffs
// known, derives keys and indexes the devices. A file-wide problem (a bad
// revoked_keys list) returns a nil registry. A bad entry is left out: the
// registry returned holds the rest, Refused lists what was left out, and
// the error joins one Refusal per entry (each wrapping ErrInvalid, naming
// the file, the device and the field), so a caller that needs the whole
// file treats any error as fatal and one that serves the rest goes on.
func Build(path string, f *File, known Known) (*Registry, error) {
	r := &Registry{byID: make(map[string]*Device, len(f.Devices)), byKID: make(map[[protocol.KeyIDLen]byte]*Device, len(f.Devices)),
		revoked: map[[protocol.KeyIDLen]byte]bool{}}
	for i, k := range f.RevokedKeys {
		kid, err := hex.DecodeString(k)
		if err != nil || len(kid) != protocol.KeyIDLen {
			return nil, fmt.Errorf("%w: %s: revoked_keys[%d]: want a %d-byte key id in hex", ErrInvalid, path, i, protocol.KeyIDLen)
		}
		r.revoked[[protocol.KeyIDLen]byte(kid)] = true
	}
	in := interner{strs: map[string]string{}, maps: map[string]map[string]string{}}
	var errs []error
	for i, e := range f.Devices {
		where := path
		if i < len(f.lines) {
			where = fmt.Sprintf("%s:%d", path, f.lines[i])
		}
		if err := r.add(i, e, known, &in, where); err != nil {
			r.refused = append(r.refused, *err)
			errs = append(errs, *err)
		}
	}
	return r, errors.Join(errs...)
}

// add checks entry i and indexes its device, or says why not.
func (r *Registry) add(i int, e Entry, known Known, in *interner, where string) *Refusal {
	bad := func(field, format string, args ...any) *Refusal {
		problem := fmt.Sprintf(format, args...)
		return &Refusal{Index: i, Where: where, ID: e.ID, Field: field, Problem: problem,
			err: fmt.Errorf("%w: %s: devices[%d] (%s): %s: %s", ErrInvalid, where, i, e.ID, field, problem)}
	}
	if !protocol.ValidName(e.ID, protocol.MaxDeviceIDLen) {
		return bad("id", "use 1..64 of [A-Za-z0-9._-]")
	}
	if e.Clock != "" && e.Clock != "device" && e.Clock != ClockGateway {
		return bad("clock", "%q: want device or gateway", e.Clock)
	}
	if r.byID[e.ID] != nil {
		return bad("id", "device listed twice")
	}
	master, err := hex.DecodeString(e.Secret)
	if err != nil || len(master) != protocol.MasterSecretSize {
		return bad("secret", "want %d bytes in hex", protocol.MasterSecretSize)
	}
	d := &Device{Entry: e}
	d.Secret, d.PublicKey, d.Next = "", "", nil
	if d.keys, err = deriveKeys(master, e.KeyType, e.PublicKey); err != nil {
		return bad(keyField(err), "%v", err)
	}
	d.ed = e.KeyType == "ed25519"
	kid := [protocol.KeyIDLen]byte(d.keys[offKID:keysLen])
	var nkid *[protocol.KeyIDLen]byte
	if e.Next != nil {
		k, refusal := r.addNextKey(d, e, master, kid, bad)
		if refusal != nil {
			return refusal
		}
		nkid = &k
	}
	d.Account, d.Provider, d.KeyType = in.str(e.Account), in.str(e.Provider), in.str(e.KeyType)
	d.Tariffs = in.tariffs(e.Tariffs)
	if d.DailyCapNanos, err = CheckTerms(e, known); err != nil {
		var te *TermsError
		errors.As(err, &te)
		return bad(te.Field, "%s", te.Problem)
	}
	if o := r.byKID[kid]; o != nil {
		return bad("key", "same key id as device %q", o.ID)
	}
	if r.revoked[kid] && !e.Revoked {
		return bad("key", "key id %x was revoked (revoked_keys): it is never accepted again", kid)
	}
	r.byID[e.ID], r.byKID[kid] = d, d
	if nkid != nil {
		r.byKID[*nkid] = d
	}
	return nil
}

// KeyIDs returns the key id of an entry's ticket key and, while it
// rotates, of its next key.
func KeyIDs(e Entry) (current [protocol.KeyIDLen]byte, next *[protocol.KeyIDLen]byte, err error) {
	master, err := hex.DecodeString(e.Secret)
	if err != nil || len(master) != protocol.MasterSecretSize {
		return current, nil, fmt.Errorf("%w: device %s: bad secret", ErrInvalid, e.ID)
	}
	keys, err := deriveKeys(master, e.KeyType, e.PublicKey)
	if err != nil {
		return current, nil, fmt.Errorf("%w: device %s: %v", ErrInvalid, e.ID, err)
	}
	current = [protocol.KeyIDLen]byte(keys[offKID:keysLen])
	if nk := e.Next; nk != nil {
		nm := master
		if e.KeyType == "hmac" {
			if nm, err = hex.DecodeString(nk.Secret); err != nil || len(nm) != protocol.MasterSecretSize {
				return current, nil, fmt.Errorf("%w: device %s: bad next_key.secret", ErrInvalid, e.ID)
			}
		}
		nkeys, err := deriveKeys(nm, e.KeyType, nk.PublicKey)
		if err != nil {
			return current, nil, fmt.Errorf("%w: device %s: next_key: %v", ErrInvalid, e.ID, err)
		}
		n := [protocol.KeyIDLen]byte(nkeys[offKID:keysLen])
		next = &n
	}
	return current, next, nil
}

// errPublicKey is deriveKeys' complaint about a public key.
var errPublicKey = errors.New("want a 32-byte Ed25519 public key in hex")

func keyField(err error) string {
	if errors.Is(err, errPublicKey) {
		return "public_key"
	}
	return "key_type"
}

// deriveKeys lays out a device's keys: derived from its master secret,
// and its Ed25519 public key (hex) for an ed25519 device.
func deriveKeys(master []byte, keyType, publicKey string) ([keysLen]byte, error) {
	var keys [keysLen]byte
	derive := func(off int, purpose protocol.KeyPurpose) {
		k, _ := protocol.DeriveKey(master, purpose)
		copy(keys[off:off+32], k)
	}
	derive(offReceipt, protocol.PurposeReceipt)
	derive(offMQTT, protocol.PurposeMQTTPassword)
	copy(keys[offPSK:offKey], dtlsPSKOf(master))
	var kid [protocol.KeyIDLen]byte
	switch keyType {
	case "hmac":
		derive(offKey, protocol.PurposeTicket)
		kid = protocol.KeyIDOf(protocol.AlgHMAC256, keys[offKey:offKID])
	case "ed25519":
		pub, err := hex.DecodeString(publicKey)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return keys, errPublicKey
		}
		copy(keys[offKey:offKID], pub)
		kid = protocol.KeyIDOf(protocol.AlgEdDSA, pub)
	default:
		return keys, fmt.Errorf("%q: want hmac or ed25519", keyType)
	}
	copy(keys[offKID:], kid[:])
	return keys, nil
}

// TermsError is an entry's terms that do not fit the configuration: the
// field and what is wrong with it.
type TermsError struct{ Field, Problem string }

func (e *TermsError) Error() string { return e.Field + ": " + e.Problem }

// CheckTerms checks what an entry charges and to whom — its account,
// provider, tariffs and daily cap — against the configuration known, and
// returns the daily cap in nanos. A *TermsError names the field.
func CheckTerms(e Entry, known Known) (metering.Nanos, error) {
	bad := func(field, format string, args ...any) (metering.Nanos, error) {
		return 0, &TermsError{Field: field, Problem: fmt.Sprintf(format, args...)}
	}
	if !known.Account(e.Account) {
		return bad("account", "account %q is not configured", e.Account)
	}
	if !known.Provider(e.Provider) {
		return bad("provider", "provider %q is not configured", e.Provider)
	}
	if len(e.Tariffs) == 0 {
		return bad("tariffs", "no meter has a tariff")
	}
	var dailyCap metering.Nanos
	if e.DailyCap != "" {
		var err error
		if dailyCap, err = metering.ParseNanos(e.DailyCap); err != nil || dailyCap <= 0 {
			return bad("daily_cap", "%q: want a decimal > 0", e.DailyCap)
		}
	}
	for meter, t := range e.Tariffs {
		if !protocol.ValidName(meter, protocol.MaxMeterNameLen) {
			return bad("tariffs", "meter %q: use 1..32 of [A-Za-z0-9._-]", meter)
		}
		if err := known.Tariff(t, e.Account); err != nil {
			return bad("tariffs."+meter, "%v", err)
		}
	}
	for meter, r := range e.Plausibility {
		if _, ok := e.Tariffs[meter]; !ok {
			return bad("plausibility."+meter, "the device has no tariff for meter %q", meter)
		}
		if r == nil {
			return bad("plausibility."+meter, "empty rules")
		}
	}
	return dailyCap, nil
}

// interner shares equal strings and equal tariff maps between devices.
type interner struct {
	strs map[string]string
	maps map[string]map[string]string
}

func (in *interner) str(s string) string {
	if v, ok := in.strs[s]; ok {
		return v
	}
	in.strs[s] = s
	return s
}

// tariffs returns a shared map equal to m. The maps are never written
// after the registry is built.
func (in *interner) tariffs(m map[string]string) map[string]string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var sig strings.Builder
	for _, k := range keys {
		sig.WriteString(k)
		sig.WriteByte(0)
		sig.WriteString(m[k])
		sig.WriteByte(0)
	}
	if v, ok := in.maps[sig.String()]; ok {
		return v
	}
	in.maps[sig.String()] = m
	return m
}

// ErrInvalid: the device registry is wrong; the message names the file,
// the device and the field.
var ErrInvalid = errors.New("registry: bad device registry")

// Known is what registry entries are checked against.
type Known interface {
	Account(id string) bool
	Provider(id string) bool
	// Tariff returns nil if tariff id exists and may charge account.
	Tariff(id, account string) error
}
