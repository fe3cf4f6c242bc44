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
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

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
}

// File is the layout of devices.yaml.
type File struct {
	Devices []Entry `yaml:"devices"`
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

// DTLSPSK returns the DTLS pre-shared key (see DTLSPSKOf).
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

// CheckMQTTPassword compares in constant time.
func (d *Device) CheckMQTTPassword(p []byte) bool {
	var got [32]byte
	if len(p) != 2*len(got) {
		return false
	}
	if _, err := hex.Decode(got[:], p); err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(got[:], d.mqttPassword()) == 1
}

// DTLSPSKOf derives a device's DTLS pre-shared key from its master secret:
// the first 32 hex digits of its PurposeDTLSPSK key, 128 bits as ASCII, so
// that tools which take a PSK only as text (libcoap's coap-client -k) can
// use it.
func DTLSPSKOf(master []byte) []byte {
	k, _ := protocol.DeriveKey(master, protocol.PurposeDTLSPSK)
	return []byte(hex.EncodeToString(k)[:32])
}

// Registry is an immutable snapshot of the device registry; reloading
// builds a new one.
type Registry struct {
	byID  map[string]*Device
	byKID map[[protocol.KeyIDLen]byte]*Device
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
	return &f, nil
}

// WriteFile replaces devices.yaml atomically (write, fsync, rename, fsync
// of the directory),
// so a gateway watching it never reads half a file.
func WriteFile(path string, f *File) error {
	b, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".devices-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// The rename is durable once the directory is synced: a crash after
	// this leaves the new file, before it the old one, never neither.
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// Build checks every entry against the accounts, providers and
// tariffs known, derives keys and indexes the devices. Errors name the
// file, the device and the field.
func Build(path string, f *File, known Known) (*Registry, error) {
	r := &Registry{byID: make(map[string]*Device, len(f.Devices)), byKID: make(map[[protocol.KeyIDLen]byte]*Device, len(f.Devices))}
	in := interner{strs: map[string]string{}, maps: map[string]map[string]string{}}
	for i, e := range f.Devices {
		bad := func(field, format string, args ...any) error {
			return fmt.Errorf("%w: %s: devices[%d] (%s): %s: %s", ErrInvalid, path, i, e.ID, field, fmt.Sprintf(format, args...))
		}
		if !protocol.ValidName(e.ID, protocol.MaxDeviceIDLen) {
			return nil, bad("id", "use 1..64 of [A-Za-z0-9._-]")
		}
		if r.byID[e.ID] != nil {
			return nil, bad("id", "device listed twice")
		}
		master, err := hex.DecodeString(e.Secret)
		if err != nil || len(master) != protocol.MasterSecretSize {
			return nil, bad("secret", "want %d bytes in hex", protocol.MasterSecretSize)
		}
		d := &Device{Entry: e}
		d.Secret, d.PublicKey = "", ""
		derive := func(off int, purpose protocol.KeyPurpose) {
			k, _ := protocol.DeriveKey(master, purpose)
			copy(d.keys[off:off+32], k)
		}
		derive(offReceipt, protocol.PurposeReceipt)
		derive(offMQTT, protocol.PurposeMQTTPassword)
		copy(d.keys[offPSK:offKey], DTLSPSKOf(master))
		var kid [protocol.KeyIDLen]byte
		switch e.KeyType {
		case "hmac":
			derive(offKey, protocol.PurposeTicket)
			kid = protocol.KeyIDOf(protocol.AlgHMAC256, d.ticketKey())
		case "ed25519":
			pub, err := hex.DecodeString(e.PublicKey)
			if err != nil || len(pub) != ed25519.PublicKeySize {
				return nil, bad("public_key", "want a 32-byte Ed25519 public key in hex")
			}
			d.ed = true
			copy(d.keys[offKey:offKID], pub)
			kid = protocol.KeyIDOf(protocol.AlgEdDSA, pub)
		default:
			return nil, bad("key_type", "%q: want hmac or ed25519", e.KeyType)
		}
		copy(d.keys[offKID:], kid[:])
		d.Account, d.Provider, d.KeyType = in.str(e.Account), in.str(e.Provider), in.str(e.KeyType)
		d.Tariffs = in.tariffs(e.Tariffs)
		if d.DailyCapNanos, err = CheckTerms(e, known); err != nil {
			var te *TermsError
			errors.As(err, &te)
			return nil, bad(te.Field, "%s", te.Problem)
		}
		if o := r.byKID[kid]; o != nil {
			return nil, bad("key", "same key id as device %q", o.ID)
		}
		r.byID[e.ID], r.byKID[kid] = d, d
	}
	return r, nil
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
