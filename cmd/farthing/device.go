package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/operator"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

const defaultData = "farthing-data"

// runDevice dispatches the device subcommands.
func runDevice(e *env, args []string) error {
	if len(args) == 0 {
		return usageError{"want a subcommand: add, list, credentials, disable, enable, remove, revoke, rotate, resume or commit"}
	}
	switch args[0] {
	case "add":
		return runDeviceAdd(e, args[1:])
	case "list":
		return runDeviceList(e, args[1:])
	case "credentials":
		return runDeviceCredentials(e, args[1:])
	case "disable", "enable", "remove", "revoke", "rotate", "rules":
		return runDeviceChange(e, args[0], args[1:])
	case "resume":
		return runDeviceResume(e, args[1:])
	case "commit":
		return runDeviceCommit(e, args[1:])
	}
	return usageError{fmt.Sprintf("unknown subcommand %q: want add, list, credentials, disable, enable, remove, revoke, rotate, resume or commit", args[0])}
}

// meterTariffs collects repeated --tariff METER=TARIFF flags.
type meterTariffs map[string]string

func (m meterTariffs) String() string { return fmt.Sprint(map[string]string(m)) }
func (m meterTariffs) Set(s string) error {
	meter, t, ok := strings.Cut(s, "=")
	if !ok || meter == "" || t == "" {
		return fmt.Errorf("%q is not METER=TARIFF", s)
	}
	m[meter] = t
	return nil
}

// deviceIDs are the ids of the devices to add: --id, or --count of them
// named PREFIX0001….
func deviceIDs(id string, count int, prefix string) ([]string, error) {
	switch {
	case id != "" && count == 0:
		return []string{id}, nil
	case id == "" && count > 0 && count <= 100000:
		ids := make([]string, 0, count)
		for i := 1; i <= count; i++ {
			ids = append(ids, fmt.Sprintf("%s%04d", prefix, i))
		}
		return ids, nil
	}
	return nil, usageError{"give --id, or --count (1..100000)"}
}

// notRegistered refuses ids of which one is in the registry already.
func notRegistered(rf *registry.File, ids []string) error {
	have := map[string]bool{}
	for _, d := range rf.Devices {
		have[d.ID] = true
	}
	for _, id := range ids {
		if have[id] {
			return fmt.Errorf("device %q is already registered", id)
		}
	}
	return nil
}

// waitLoaded waits up to 10 s for the running gateway to have re-read the
// device file (it does within a second), so that the devices can connect
// when the command returns.
func waitLoaded(op *operatorFlags, data, last string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st operator.DeviceStatus
		err := op.getJSON(data, "/devices/"+url.PathEscape(last), &st)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the running gateway has not loaded them within 10 s (see its log): %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// newDevices are devices to add with the same terms.
type newDevices struct {
	ids                                  []string
	keyType, account, provider, dailyCap string
	clock                                string // "" or "device": the device's clock; "gateway": dated on arrival
	tariffs                              meterTariffs
	pub                                  ed25519.PublicKey // the device's own key (one device), or nil
}

// add writes the devices' secret files into out and their entries into
// the registry file, once the file as it will be written loads.
func (d newDevices) add(e *env, rf *registry.File, regFile, out string) error {
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	secrets := map[string]registry.Secrets{}
	for _, id := range d.ids {
		entry, sec, err := registry.NewDevice(id, d.keyType, d.account, d.provider, d.tariffs)
		if err != nil {
			return err
		}
		entry.DailyCap, entry.Clock = d.dailyCap, d.clock
		if d.pub != nil {
			entry.PublicKey, sec.Private = hex.EncodeToString(d.pub), nil
		}
		secrets[id] = sec
		rf.Devices = append(rf.Devices, entry)
	}
	// The file as it will be written must load: ids, meters, key ids
	// (a public key registered twice) — the terms were checked above.
	if _, err := registry.Build(regFile, rf, anyTerms{}); err != nil {
		return fmt.Errorf("refused, nothing written: %w", err)
	}
	for _, id := range d.ids {
		if err := writeDeviceSecrets(out, id, secrets[id]); err != nil {
			return err
		}
	}
	if d.keyType == "ed25519" && d.pub == nil {
		fmt.Fprintf(e.stderr, "farthing device add: the devices' private keys were made here (%s): for devices in the field, let each make its own and register it with --pub\n", out)
	}
	if err := os.MkdirAll(filepath.Dir(regFile), 0o700); err != nil {
		return err
	}
	if err := registry.WriteFile(regFile, rf); err != nil {
		return err
	}
	return nil
}

// runDeviceAdd provisions devices: keys, a registry entry, secret files.
func runDeviceAdd(e *env, args []string) error {
	fs := newFlags("device add")
	data := fs.String("data", defaultData, "the gateway's data directory")
	regFile := fs.String("registry", "", "device registry (default DATA/devices.yaml)")
	id := fs.String("id", "", "device id (or --count with --prefix)")
	count := fs.Int("count", 0, "add this many devices named PREFIX0001…")
	prefix := fs.String("prefix", "dev-", "name prefix with --count")
	typ := fs.String("type", "hmac", "hmac or ed25519")
	pub := fs.String("pub", "", "the Ed25519 public key the device made itself: a key file or 64 hex digits (with --id; implies --type ed25519)")
	account := fs.String("account", "", "account the device charges")
	dailyCap := fs.String("daily-cap", "", "what the device may spend per day, a decimal in its account's currency (default: no cap)")
	provider := fs.String("provider", "", "provider the usage is owed to")
	tariffs := meterTariffs{}
	fs.Var(tariffs, "tariff", "METER=TARIFF, repeatable")
	out := fs.String("out", "", "directory for the devices' secret files (default DATA/device-keys)")
	clock := fs.String("clock", "", "gateway: the device has no usable clock, the gateway dates its tickets on arrival (default: the device's own)")
	fs.String("config", "", "with no gateway running: the gateway's configuration file, whose accounts, providers and tariff file the terms are checked against")
	op := addOperatorFlags(fs)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *regFile == "" {
		*regFile = filepath.Join(*data, "devices.yaml")
	}
	if *out == "" {
		*out = filepath.Join(*data, "device-keys")
	}
	ids, err := deviceIDs(*id, *count, *prefix)
	if err != nil {
		return err
	}
	var devicePub ed25519.PublicKey
	if *pub != "" {
		if *count != 0 {
			return usageError{"--pub registers one device: give --id"}
		}
		var err error
		if devicePub, err = readPublicKey(*pub); err != nil {
			return fmt.Errorf("--pub: %w", err)
		}
		*typ = "ed25519"
	}
	if *account == "" || *provider == "" || len(tariffs) == 0 {
		return usageError{"--account, --provider and at least one --tariff are required"}
	}
	rf, err := registry.ReadFile(*regFile)
	if err != nil {
		return err
	}
	if err := notRegistered(rf, ids); err != nil {
		return err
	}
	// Every device added here has the same terms: one check covers them.
	check := operator.DeviceCheck{Devices: []operator.DeviceTerms{{ID: ids[0], Account: *account, Provider: *provider,
		Tariffs: tariffs, DailyCap: *dailyCap}}}
	if *clock != "" && *clock != "device" && *clock != registry.ClockGateway {
		return usageError{fmt.Sprintf("--clock %q: want device or gateway", *clock)}
	}
	running, err := checkTerms(e, fs, op, check.Devices[0])
	if err != nil {
		return err
	}
	nd := newDevices{ids: ids, keyType: *typ, account: *account, provider: *provider, tariffs: tariffs, dailyCap: *dailyCap, pub: devicePub, clock: *clock}
	if err := nd.add(e, rf, *regFile, *out); err != nil {
		return err
	}
	if !running {
		fmt.Fprintf(e.stdout, "added %d device(s) to %s; secrets in %s (a gateway started on it loads them)\n", len(ids), *regFile, *out)
		return nil
	}
	if err := waitLoaded(op, *data, ids[len(ids)-1]); err != nil {
		return fmt.Errorf("added %d device(s) to %s, but %w", len(ids), *regFile, err)
	}
	fmt.Fprintf(e.stdout, "added %d device(s) to %s; secrets in %s; the running gateway has loaded them\n", len(ids), *regFile, *out)
	return nil
}

// checkTerms has the running gateway check a new device's terms against
// its configuration before anything is written (a device it would refuse
// must not make the whole file unloadable); with none running, the
// configuration files do (checkOffline). It reports whether a gateway runs.
func checkTerms(e *env, fs *flag.FlagSet, op *operatorFlags, dt operator.DeviceTerms) (bool, error) {
	data, config := fs.Lookup("data").Value.String(), fs.Lookup("config").Value.String()
	var checked map[string]int
	switch err := op.postJSON(data, "/devices/check", operator.DeviceCheck{Devices: []operator.DeviceTerms{dt}}, &checked); {
	case errors.Is(err, errNoDaemon):
		if err := checkOffline(fs, config, data, dt); err != nil {
			return false, err
		}
		fmt.Fprintf(e.stderr, "farthing device add: no gateway runs on %s: the terms were checked against %s\n", data, config)
		return false, nil
	case err != nil:
		return false, fmt.Errorf("refused, nothing written: %w", err)
	}
	return true, nil
}

// checkOffline checks a device's terms against the configuration file of
// a gateway that is not running (config; its data directory is --data
// when that flag is given) and the tariff file it names, the checks a
// running gateway makes: an entry its gateway would refuse is never
// written. Without the file nothing can be checked, so nothing is added.
func checkOffline(fs *flag.FlagSet, config, data string, dt operator.DeviceTerms) error {
	if config == "" {
		return usageError{fmt.Sprintf("no gateway runs on %s, so the terms cannot be checked by it: give its configuration file with --config (nothing written)", data)}
	}
	override := ""
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "data" {
			override = data
		}
	})
	cfg, err := gateway.LoadConfigWithDataDir(config, override)
	if err != nil {
		return err
	}
	terms, _, err := gateway.LoadTerms(cfg)
	if err != nil {
		return err
	}
	e := registry.Entry{ID: dt.ID, Account: dt.Account, Provider: dt.Provider, Tariffs: dt.Tariffs, DailyCap: dt.DailyCap}
	if _, err := registry.CheckTerms(e, terms); err != nil {
		return fmt.Errorf("refused, nothing written: %w (checked against %s and %s)", err, config, cfg.Tariffs)
	}
	return nil
}

// runDeviceChange is "device disable|enable|remove --id ID": the device
// file is replaced atomically and a running gateway picks the change up
// (a disabled device's tickets are refused with reason device_disabled
// and it cannot connect; a removed one is unknown, and its secret files
// on the gateway are deleted).
func runDeviceChange(e *env, verb string, args []string) error {
	fs := newFlags("device " + verb)
	data := fs.String("data", defaultData, "the gateway's data directory")
	regFile := fs.String("registry", "", "device registry (default DATA/devices.yaml)")
	id := fs.String("id", "", "the device")
	keys := fs.String("keys", "", "directory of the devices' secret files (default DATA/device-keys)")
	var pub, overlap, meter, set *string
	var commit *bool
	if verb == "rules" {
		meter = fs.String("meter", "", "the meter whose rules change")
		set = fs.String("set", "", `its own plausibility rules, YAML: "max_jump: 50000, max_rate: 22000/h"; empty: back to its tariff's`)
	}
	if verb == "rotate" {
		pub = fs.String("pub", "", "ed25519: the new public key the device made (hex, or a public key file)")
		overlap = fs.String("overlap", "168h", "how long the old key stays valid if the device is not seen using the new one")
		commit = fs.Bool("commit", false, "end the rotation: the new key becomes the device's key, the old one is revoked")
	}
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *id == "" {
		return usageError{"--id is required"}
	}
	if *regFile == "" {
		*regFile = filepath.Join(*data, "devices.yaml")
	}
	if *keys == "" {
		*keys = filepath.Join(*data, "device-keys")
	}
	rf, err := registry.ReadFile(*regFile)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(rf.Devices, func(d registry.Entry) bool { return d.ID == *id })
	if i < 0 {
		return fmt.Errorf("device %q is not registered in %s", *id, *regFile)
	}
	switch verb {
	case "disable":
		rf.Devices[i].Disabled = true
	case "enable":
		rf.Devices[i].Disabled = false
	case "remove":
		rf.Devices = slices.Delete(rf.Devices, i, i+1)
	case "revoke":
		cur, next, err := registry.KeyIDs(rf.Devices[i])
		if err != nil {
			return err
		}
		rf.Devices[i].Revoked = true
		rf.RevokedKeys = appendKeyID(rf.RevokedKeys, cur)
		if next != nil {
			rf.RevokedKeys = appendKeyID(rf.RevokedKeys, *next)
		}
	case "rules":
		if err := setRules(&rf.Devices[i], *meter, *set); err != nil {
			return err
		}
		if _, err := registry.Build(*regFile, rf, anyTerms{}); err != nil {
			return fmt.Errorf("refused, nothing written: %w", err)
		}
	case "rotate":
		note, err := rotate(&rf.Devices[i], rf, *keys, *pub, *overlap, *commit)
		if err != nil {
			return err
		}
		if err := registry.WriteFile(*regFile, rf); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "device %s: %s in %s (a running gateway picks it up)\n", *id, note, *regFile)
		return nil
	}
	if err := registry.WriteFile(*regFile, rf); err != nil {
		return err
	}
	if verb == "remove" {
		for _, f := range []string{*id + ".secret", *id + ".key"} {
			if err := os.Remove(filepath.Join(*keys, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	done := verb + "d"
	if verb == "rules" {
		done = "rules set"
	}
	fmt.Fprintf(e.stdout, "device %s: %s in %s (a running gateway picks it up)\n", *id, done, *regFile)
	return nil
}

func appendKeyID(list []string, kid [protocol.KeyIDLen]byte) []string {
	h := hex.EncodeToString(kid[:])
	if slices.Contains(list, h) {
		return list
	}
	return append(list, h)
}

// rotate starts or commits a rotation of e's ticket key and says what it
// did. Starting: an ed25519 device's new public key comes from the
// device (pub); an hmac device gets a new master secret, written as
// KEYS/ID.next.secret for its firmware. Committing: the next key becomes
// the key and the old key id is revoked for good.
func rotate(e *registry.Entry, rf *registry.File, keys, pub, overlap string, commit bool) (string, error) {
	if commit {
		if e.Next == nil {
			return "", fmt.Errorf("device %s is not rotating a key", e.ID)
		}
		cur, _, err := registry.KeyIDs(*e)
		if err != nil {
			return "", err
		}
		rf.RevokedKeys = appendKeyID(rf.RevokedKeys, cur)
		if e.KeyType == "hmac" {
			e.Secret = e.Next.Secret
			next := filepath.Join(keys, e.ID+".next.secret")
			if err := os.Rename(next, filepath.Join(keys, e.ID+".secret")); err != nil && !errors.Is(err, os.ErrNotExist) {
				return "", err
			}
		} else {
			e.PublicKey = e.Next.PublicKey
		}
		e.Next = nil
		return fmt.Sprintf("rotation committed, key %x revoked", cur), nil
	}
	d, err := time.ParseDuration(overlap)
	if err != nil || d <= 0 {
		return "", usageError{"--overlap: want a duration above 0, such as 168h"}
	}
	if e.Next != nil {
		return "", fmt.Errorf("device %s is already rotating (until %s): commit it first (--commit)", e.ID, e.Next.Until)
	}
	nk := &registry.NextKey{Until: time.Now().Add(d).UTC().Format(time.RFC3339)}
	switch e.KeyType {
	case "ed25519":
		if pub == "" {
			return "", usageError{"rotate: an ed25519 device makes its new key itself: give its public key with --pub FILE|HEX"}
		}
		k, err := readPublicKey(pub)
		if err != nil {
			return "", err
		}
		nk.PublicKey = hex.EncodeToString(k)
	case "hmac":
		if pub != "" {
			return "", usageError{"rotate: --pub is for ed25519 devices; an hmac device gets a new secret"}
		}
		m := make([]byte, protocol.MasterSecretSize)
		if _, err := rand.Read(m); err != nil {
			return "", err
		}
		nk.Secret = hex.EncodeToString(m)
		if err := os.MkdirAll(keys, 0o700); err != nil {
			return "", err
		}
		enc, err := (&keyfile.Key{Master: m}).EncodePrivate()
		if err != nil {
			return "", err
		}
		if err := keyfile.WriteNew(filepath.Join(keys, e.ID+".next.secret"), enc, 0o600); err != nil {
			return "", err
		}
	}
	e.Next = nk
	_, next, err := registry.KeyIDs(*e)
	if err != nil {
		e.Next = nil
		return "", err
	}
	what := fmt.Sprintf("rotating to key %x; the old key is valid until the device uses the new one, or until %s", *next, nk.Until)
	if e.KeyType == "hmac" {
		what += "; the new secret is in " + filepath.Join(keys, e.ID+".next.secret")
	}
	return what, nil
}

// setRules gives meter of e its own plausibility rules (a YAML map, as in
// a tariff's plausibility), or, with rules empty, takes them away.
func setRules(e *registry.Entry, meter, rules string) error {
	if meter == "" {
		return usageError{"rules: --meter is required"}
	}
	if _, ok := e.Tariffs[meter]; !ok {
		return fmt.Errorf("device %s has no meter %q", e.ID, meter)
	}
	if rules == "" {
		delete(e.Plausibility, meter)
		if len(e.Plausibility) == 0 {
			e.Plausibility = nil
		}
		return nil
	}
	var r metering.Rules
	if err := yaml.Unmarshal([]byte("{"+strings.Trim(rules, "{}")+"}"), &r); err != nil {
		return usageError{"--set: " + err.Error()}
	}
	if e.Plausibility == nil {
		e.Plausibility = map[string]*metering.Rules{}
	}
	e.Plausibility[meter] = &r
	return nil
}

// runDeviceResume is "device resume --id ID": lifts a suspension the
// running gateway made.
func runDeviceResume(e *env, args []string) error {
	fs := newFlags("device resume")
	data := fs.String("data", defaultData, "the gateway's data directory")
	id := fs.String("id", "", "the device")
	op := addOperatorFlags(fs)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *id == "" {
		return usageError{"--id is required"}
	}
	var res map[string]string
	if err := op.postJSON(*data, "/devices/"+url.PathEscape(*id)+"/resume", struct{}{}, &res); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "device %s: resumed\n", *id)
	return nil
}

// anyTerms is a registry.Known that takes every account, provider and
// tariff: for checking a device file's structure without its gateway.
type anyTerms struct{}

func (anyTerms) Account(string) bool         { return true }
func (anyTerms) Provider(string) bool        { return true }
func (anyTerms) Tariff(string, string) error { return nil }

// readPublicKey reads an Ed25519 public key from 64 hex digits or a key
// file; a private key file is refused (it should never leave the device).
func readPublicKey(s string) (ed25519.PublicKey, error) {
	if b, err := hex.DecodeString(s); err == nil {
		if len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%d bytes of hex: want %d", len(b), ed25519.PublicKeySize)
		}
		return b, nil
	}
	k, err := keyfile.Load(s)
	if err != nil {
		return nil, err
	}
	if k.Public == nil {
		return nil, fmt.Errorf("%s: not an Ed25519 public key file (a private key stays on the device)", s)
	}
	return k.Public, nil
}

// writeDeviceSecrets writes ID.secret (and ID.key for Ed25519) for the
// firmware, 0600.
func writeDeviceSecrets(dir, id string, s registry.Secrets) error {
	m, err := (&keyfile.Key{Master: s.Master}).EncodePrivate()
	if err != nil {
		return err
	}
	if err := keyfile.WriteNew(filepath.Join(dir, id+".secret"), m, 0o600); err != nil {
		return err
	}
	if s.Private != nil {
		k, err := (&keyfile.Key{Private: s.Private}).EncodePrivate()
		if err != nil {
			return err
		}
		return keyfile.WriteNew(filepath.Join(dir, id+".key"), k, 0o600)
	}
	return nil
}

func runDeviceList(e *env, args []string) error {
	fs := newFlags("device list")
	data := fs.String("data", defaultData, "the gateway's data directory")
	regFile := fs.String("registry", "", "device registry (default DATA/devices.yaml)")
	pubs := fs.Bool("public-keys", false, "print each Ed25519 device's id and public key, one per line: the file\nfarthing receive --device-keys reads (a provider checks the devices' payword commitments with it)")
	op := addOperatorFlags(fs)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *regFile == "" {
		*regFile = filepath.Join(*data, "devices.yaml")
	}
	rf, err := registry.ReadFile(*regFile)
	if err != nil {
		return err
	}
	if err := withCommanded(op, *data, rf); err != nil {
		return err
	}
	if *pubs {
		for _, d := range rf.Devices {
			if d.KeyType == "ed25519" && d.PublicKey != "" && !d.Revoked {
				fmt.Fprintf(e.stdout, "%s %s\n", d.ID, d.PublicKey)
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKEY\tACCOUNT\tPROVIDER\tTARIFFS")
	for _, d := range rf.Devices {
		var ts []string
		for m, t := range d.Tariffs {
			ts = append(ts, m+"="+t)
		}
		sort.Strings(ts)
		var states []string
		if d.Disabled {
			states = append(states, "disabled")
		}
		if d.Revoked {
			states = append(states, "revoked")
		}
		if d.Secret == "" && d.KeyType == "ed25519" {
			states = append(states, "provisioned by command")
		}
		if d.Next != nil {
			states = append(states, "rotating until "+d.Next.Until)
		}
		state := ""
		if len(states) > 0 {
			state = " (" + strings.Join(states, ", ") + ")"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\n", d.ID, state, d.KeyType, d.Account, d.Provider, strings.Join(ts, ","))
	}
	return tw.Flush()
}

// withCommanded adds to rf what the gateway's control channel left in its
// books: the devices provisioned by command (with no secret: it is the
// fleet's device root's) and the revocations, which mark the devices
// they name.
func withCommanded(op *operatorFlags, data string, rf *registry.File) error {
	v, err := controlView(op, data)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, e := range rf.Devices {
		have[e.ID] = true
	}
	for _, p := range v.Provisioned {
		if !have[p.ID] {
			rf.Devices = append(rf.Devices, registry.Entry{ID: p.ID, KeyType: "ed25519", PublicKey: p.PublicKey, Account: p.Account,
				Provider: p.Provider, Tariffs: p.Tariffs})
		}
	}
	revoked := map[string]bool{}
	for _, k := range v.RevokedKeys {
		if kid, err := hex.DecodeString(k); err == nil {
			revoked[string(kid)] = true
		}
	}
	registry.MarkRevoked(rf, revoked)
	return nil
}

// runDeviceCredentials prints the transport credentials derived from a
// device's secret: what a device (or coap-client, mosquitto_pub) needs.
func runDeviceCredentials(e *env, args []string) error {
	fs := newFlags("device credentials")
	data := fs.String("data", defaultData, "the gateway's data directory")
	regFile := fs.String("registry", "", "device registry (default DATA/devices.yaml)")
	id := fs.String("id", "", "device id")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *regFile == "" {
		*regFile = filepath.Join(*data, "devices.yaml")
	}
	if *id == "" {
		return usageError{"--id is required"}
	}
	rf, err := registry.ReadFile(*regFile)
	if err != nil {
		return err
	}
	for _, d := range rf.Devices {
		if d.ID != *id {
			continue
		}
		s, err := registry.SecretsOf(d)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "mqtt user: %s\nmqtt password: %s\ndtls psk identity: %s\ndtls psk: %s\n",
			d.ID, s.MQTTPassword(), d.ID, s.DTLSPSK())
		return nil
	}
	return fmt.Errorf("%s: no device %q", *regFile, *id)
}

// runDeviceCommit registers a payword chain's commitment for a device at
// provisioning, through the running gateway's operator API: the
// commitment (made and signed with the device's key, as the device would
// send it) is checked and accepted as if it came from the device.
func runDeviceCommit(e *env, args []string) error {
	fs := newFlags("device commit")
	data := fs.String("data", defaultData, "the gateway's data directory")
	id := fs.String("id", "", "device id")
	file := fs.String("commitment", "", "the chain commitment (a COSE message, as the device signed it)")
	op := addOperatorFlags(fs)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *id == "" || *file == "" {
		return usageError{"--id and --commitment are required"}
	}
	b, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	var r protocol.Receipt
	if err := op.postJSON(*data, "/chains/"+url.PathEscape(*id), operator.ChainRegistration{Commitment: b}, &r); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "device %s: chain commitment %s", *id, r.Status)
	if r.Reason != protocol.ReasonNone {
		fmt.Fprintf(e.stdout, " (%s)", r.Reason)
	}
	fmt.Fprintln(e.stdout)
	if r.Status != protocol.StatusAccepted && r.Status != protocol.StatusDuplicate {
		return fmt.Errorf("the gateway refused the commitment: %s", r.Reason)
	}
	return nil
}
