package gateway

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/farthing-iot/farthing/gateway/pkcs11key"

	"github.com/farthing-iot/farthing/gateway/ingest"
	"github.com/farthing-iot/farthing/gateway/operator"

	"go.yaml.in/yaml/v3"

	"github.com/farthing-iot/farthing/gateway/coaps"
	"github.com/farthing-iot/farthing/gateway/mqtt"
	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// Config is the daemon's configuration, one YAML file. Every field has a
// default that works on one machine: an embedded broker on localhost and a
// data directory under the working directory.
type Config struct {
	// GatewayID names this gateway in aggregates; default "gw-" and the key
	// id of the gateway's key in hex (protocol.DefaultGatewayID), which no
	// two gateways share. Receivers bind it to the key: it is a label, and
	// the stream a receiver books on is the key and the state file's epoch.
	GatewayID string `yaml:"gateway_id"`
	// DataDir holds the state file, the gateway key and, by default, the
	// tariff and device files; default "farthing-data".
	DataDir string `yaml:"data_dir"`
	// KeyFile is the gateway's Ed25519 key; default DataDir/gateway.key,
	// generated on first start.
	KeyFile string `yaml:"key_file"`
	// KeyPKCS11, if set, keeps the gateway's key in a PKCS#11 token
	// instead of KeyFile: the key never leaves the token, which signs
	// (pkcs11key). Its public key is written to KeyFile + ".pub".
	KeyPKCS11 *pkcs11key.Config `yaml:"key_pkcs11"`
	// Tariffs is the tariff file; default DataDir/tariffs.yaml.
	Tariffs string `yaml:"tariffs"`
	// Devices is the device registry; default DataDir/devices.yaml.
	Devices string `yaml:"devices"`
	// Accounts are created with their opening balance on first sight;
	// after that the ledger in the state file is the authority.
	Accounts []AccountConfig `yaml:"accounts"`
	// VoucherIssuers are the public key files (PEM) of those whose signed
	// top-up vouchers this gateway redeems; none by default.
	VoucherIssuers []string `yaml:"voucher_issuers"`
	// Providers are who devices' usage is owed to, with their settlement policy.
	Providers []ProviderConfig `yaml:"providers"`
	MQTT      MQTTConfig       `yaml:"mqtt"`
	DTLS      DTLSConfig       `yaml:"dtls"`
	HTTP      HTTPConfig       `yaml:"http"`
	Operator  operator.Config  `yaml:"operator"`
	Limits    LimitsConfig     `yaml:"limits"`
	Commit    CommitConfig     `yaml:"commit"`
	// Corrections tunes how late usage of sealed windows goes upstream.
	Corrections CorrectionsConfig `yaml:"corrections"`
	// Grants are the rules devices are granted units by (reservations).
	Grants GrantsConfig `yaml:"grants"`
	// Upstreams receive every sealed aggregate (or their providers').
	Upstreams []UpstreamConfig `yaml:"upstreams"`
	// Control is the control channel: the providers' commands down to
	// this gateway (control.go).
	Control ControlConfig `yaml:"control"`
	// Forward tunes every upstream's forwarder.
	Forward ForwardSettings `yaml:"forward"`
	// Fraud is what the gateway does about devices that break their
	// plausibility rules or look cloned.
	Fraud ingest.FraudConfig `yaml:"fraud"`
	// Audit is where the audit data (raw tickets and Merkle leaves) goes
	// before the edge prunes it.
	Audit AuditConfig `yaml:"audit"`
	// Clock is the wall clock the gateway dates, refuses and seals by;
	// nil is time.Now. Not configurable: a seam for tests and simulations
	// of a clock that is wrong or jumps.
	Clock func() time.Time `yaml:"-"`
}

// AuditConfig is the audit sink: every sealed aggregate's bundle (the
// signed aggregate, its Merkle leaves and raw tickets) is written there
// before the edge prunes it, so any ticket can still be proved
// (farthing proof --audit).
type AuditConfig struct {
	// Sink is "files" (the default: JSON lines in Dir, a new file every
	// Rotate, for an operator or a collector to take away) or "off" (audit
	// data is dropped with the rest after limits.audit_retention).
	Sink string `yaml:"sink"`
	// Dir is where the files go; default DATA/audit.
	Dir string `yaml:"dir"`
	// Rotate starts a new file this often; default 1h.
	Rotate time.Duration `yaml:"rotate"`
}

// UpstreamConfig is one destination of aggregates.
type UpstreamConfig struct {
	// Name keys the upstream's progress in the state file: keep it stable.
	Name string `yaml:"name"`
	// Type is mqtt, http or jetstream.
	Type string `yaml:"type"`
	// URL: tcp://host:port (mqtt), https://… (http), nats://host:port[,…] (jetstream).
	URL string `yaml:"url"`
	// Providers limits the upstream to these providers; empty: all.
	Providers []string `yaml:"providers"`
	// Username and Password for mqtt.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// Topic is the mqtt topic prefix or the jetstream subject prefix.
	Topic string `yaml:"topic"`
	// Stream, CreateStream and Replicas are for jetstream.
	Stream       string `yaml:"stream"`
	CreateStream bool   `yaml:"create_stream"`
	Replicas     int    `yaml:"replicas"`
	// Header is added to every http request.
	Header map[string]string `yaml:"header"`
}

// ControlConfig is the control channel: signed commands from providers
// (tariff versions, adjustments, revocations, provisioning), applied once
// and in order and acknowledged in the aggregate stream. Off while Type is
// empty.
type ControlConfig struct {
	// Trust lists the providers' control public keys (PEM files, as
	// farthing keygen writes them): a command signed by another key is
	// refused (command_forged).
	Trust []string `yaml:"trust"`
	// Groups are the fleet groups this gateway belongs to: it applies the
	// commands of its own sequence and of each group's.
	Groups []string `yaml:"groups"`
	// DeviceRoot is the fleet's device root (a master secret file, 0600):
	// a device provisioned by command has the master secret
	// protocol.DeviceMaster derives from it. Without it, provision
	// commands are refused.
	DeviceRoot string `yaml:"device_root"`
	// Type is jetstream, mqtt or http (long polling).
	Type string `yaml:"type"`
	// URL: nats://host:port[,…] (jetstream), tcp://host:port (mqtt), or
	// the receiver's commands endpoint https://…/farthing/commands (http).
	URL string `yaml:"url"`
	// Username and Password for mqtt.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// Topic is the jetstream subject prefix (default farthing.commands)
	// or the mqtt topic prefix (default farthing/v1/commands).
	Topic string `yaml:"topic"`
	// Stream is the jetstream stream of commands; default
	// FARTHING_COMMANDS.
	Stream string `yaml:"stream"`
	// Header is added to every http request (for example Authorization).
	Header map[string]string `yaml:"header"`
	// PollWait is how long one http poll waits for a command; default 25s.
	PollWait time.Duration `yaml:"poll_wait"`
	// MaxSkew is how far ahead of this gateway's clock a command's
	// not-before may be and still apply; default 5m. A command further
	// ahead waits.
	MaxSkew time.Duration `yaml:"max_skew"`
}

// AccountConfig is an account's opening state.
type AccountConfig struct {
	ID          string `yaml:"id"`
	Kind        string `yaml:"kind"` // prepaid | postpaid
	Currency    string `yaml:"currency"`
	Balance     string `yaml:"balance"`      // decimal, opening balance
	CreditLimit string `yaml:"credit_limit"` // decimal, postpaid only
	// DailyCap and MonthlyCap bound what the account may spend per
	// calendar day and month (decimal, in its currency); none by default.
	DailyCap   string `yaml:"daily_cap,omitempty"`
	MonthlyCap string `yaml:"monthly_cap,omitempty"`
	// Timezone is where the account's days and months begin (IANA name);
	// default UTC.
	Timezone string `yaml:"timezone,omitempty"`
	// LowBalance is a level (decimal): receipts of tickets that leave the
	// account able to spend less carry the low-balance flag.
	LowBalance string `yaml:"low_balance,omitempty"`
}

// LowBalanceLevel returns the account's low-balance level; 0 is none.
func (a AccountConfig) LowBalanceLevel() (metering.Nanos, error) {
	if a.LowBalance == "" {
		return 0, nil
	}
	n, err := metering.ParseNanos(a.LowBalance)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("low_balance %q: want a decimal > 0", a.LowBalance)
	}
	return n, nil
}

// Caps returns the account's spending caps.
func (a AccountConfig) Caps() (metering.Caps, error) {
	var c metering.Caps
	var err error
	for _, f := range []struct {
		s    string
		to   *metering.Nanos
		name string
	}{{a.DailyCap, &c.Day, "daily_cap"}, {a.MonthlyCap, &c.Month, "monthly_cap"}} {
		if f.s == "" {
			continue
		}
		if *f.to, err = metering.ParseNanos(f.s); err != nil || *f.to <= 0 {
			return c, fmt.Errorf("%s %q: want a decimal > 0", f.name, f.s)
		}
	}
	if a.Timezone != "" {
		if c.Location, err = time.LoadLocation(a.Timezone); err != nil {
			return c, fmt.Errorf("timezone %q: %v", a.Timezone, err)
		}
	}
	return c, nil
}

// ProviderConfig is a provider's settlement policy.
type ProviderConfig struct {
	ID        string        `yaml:"id"`
	Window    time.Duration `yaml:"window"`    // aggregation window; default 1h
	Threshold string        `yaml:"threshold"` // "5.00 EUR": seal early at this amount
}

// MQTTConfig chooses the broker.
type MQTTConfig struct {
	// Mode is "embedded" (default: the daemon runs the broker) or
	// "external" (the daemon is a client of a broker it does not own).
	Mode string `yaml:"mode"`
	// Listen is the embedded broker's TCP address; default 127.0.0.1:1883.
	Listen string `yaml:"listen"`
	// Broker is the external broker's URL, e.g. tcp://127.0.0.1:1883.
	Broker   string `yaml:"broker"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	ClientID string `yaml:"client_id"`
	// TopicPrefix; tickets arrive on PREFIX/DEVICE/ticket, receipts leave
	// on PREFIX/DEVICE/receipt. Default farthing/v1.
	TopicPrefix string `yaml:"topic_prefix"`
	// SessionExpiry is how long the embedded broker keeps the session of a
	// device that left without a clean session (its subscription and
	// undelivered receipts); default 1h. A device that comes back later
	// resends its unanswered tickets and is answered again ("duplicate",
	// with the original charge), so nothing is lost when a session expires.
	SessionExpiry time.Duration `yaml:"session_expiry"`
	// ReceiptQoS is the QoS receipts are published at: 0 (default) or 1.
	// Receipts need no delivery guarantee of their own: a device keeps a
	// ticket until its receipt arrives and sends it again after a
	// reconnect, and a repeat is answered with the original receipt.
	ReceiptQoS int `yaml:"receipt_qos"`
	// The embedded broker's front door: connect_timeout, max_connections,
	// connect_rate, connect_burst (see mqtt.DoorConfig for the defaults).
	mqtt.DoorConfig `yaml:",inline"`
}

// DTLSConfig is the CoAP-over-DTLS listener (see package coaps).
type DTLSConfig struct {
	// Listen is the UDP address; default 127.0.0.1:5684; "off" disables it.
	Listen string `yaml:"listen"`
	// The abuse limits: handshake_timeout, max_half_open, handshake_rate,
	// handshake_burst, idle_timeout, max_sessions (see coaps.Limits).
	coaps.Limits `yaml:",inline"`
	// CertFile and KeyFile (PEM) are the gateway's certificate for devices
	// that authenticate with certificates issued by ClientCAFile (PEM); the
	// certificate's common name is the device id. Empty: PSK only.
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
	// CRLFile is the client CA's certificate revocation list (PEM or
	// DER), checked at every handshake and read again when it changes: a
	// revoked certificate's handshake fails.
	CRLFile string `yaml:"crl_file"`
}

// HTTPConfig is the metrics and health endpoint.
type HTTPConfig struct {
	// Listen address for /metrics, /healthz and /readyz, and nothing else
	// (the operator API has its own listener); default 127.0.0.1:9100;
	// "off" disables it.
	Listen string `yaml:"listen"`
	// Console serves the web console under /console/ on this listener:
	// "on" (default) or "off". Reading needs a loopback client (or the
	// operator token); changes need the operator token
	// (operator.token_file).
	Console string `yaml:"console"`
}

// LimitsConfig bounds what the gateway accepts.
type LimitsConfig struct {
	// MaxStoreBytes: above this state-file size new tickets get "retry
	// later"; default 1 GiB.
	MaxStoreBytes int64 `yaml:"max_store_bytes"`
	// WarnStoreBytes: above this state-file size the gateway warns (log
	// and farthing_store_warning); default 80% of MaxStoreBytes.
	WarnStoreBytes int64 `yaml:"warn_store_bytes"`
	// MinFreeBytes: below this much free disk, new tickets get "retry
	// later". Default: 64 MiB, or 5% of the data directory's file system
	// if that is less (a 256 MiB partition keeps 12.8 MiB free, not 64),
	// worked out at start-up and logged with the free space found.
	MinFreeBytes int64 `yaml:"min_free_bytes"`
	// MaxClockSkew: a ticket whose device time is further than this from
	// the gateway's clock is refused; default 48h.
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
	// RetryAfter is what a "retry later" receipt asks for; default 5s.
	RetryAfter time.Duration `yaml:"retry_after"`
	// AuditRetention is how long the per-ticket data (receipts, raw
	// tickets, Merkle leaves, ledger entries) stays at the edge after an
	// aggregate's window ended, once every upstream confirmed it and the
	// audit sink took its bundle; then it is pruned and folded. Default 24h.
	AuditRetention time.Duration `yaml:"audit_retention"`
}

// CorrectionsConfig tunes late usage: a ticket whose time falls in a
// window that sealed already goes into its slot's fold, which seals as
// one correction once Fold has passed since its first late ticket (at
// the next housekeeping tick after that), so a device's backlog is a
// correction per window it touched, not per ticket.
type CorrectionsConfig struct {
	Fold time.Duration `yaml:"fold"`
}

// GrantsConfig is how grants are made: how long one lasts, how long it
// may go unused, when a device asks again, what it does at its limit when
// the gateway is out of reach, and the most units one request gets.
// Zero values take metering.GrantTerms' defaults (15m, 5m, 20%, stop).
type GrantsConfig struct {
	Validity  time.Duration `yaml:"validity"`
	Idle      time.Duration `yaml:"idle_timeout"`
	Threshold uint64        `yaml:"threshold_percent"`
	// FinalUnit is "stop" (the default) or "continue": go on Grace units
	// past the limit while the gateway is out of reach.
	FinalUnit string `yaml:"final_unit"`
	Grace     uint64 `yaml:"grace_units"`
	MaxUnits  uint64 `yaml:"max_units"`
}

// Terms are the grant rules as the books take them.
func (g GrantsConfig) Terms() metering.GrantTerms {
	return metering.GrantTerms{Validity: g.Validity, Idle: g.Idle, ThresholdPercent: g.Threshold, Continue: g.FinalUnit == "continue",
		Grace: g.Grace, MaxUnits: g.MaxUnits}.WithDefaults()
}

func (g GrantsConfig) validate(bad func(field, format string, args ...any) error) error {
	switch {
	case g.Validity != 0 && (g.Validity < time.Second || g.Validity > 24*time.Hour):
		return bad("grants.validity", "%v: want 1s to 24h", g.Validity)
	case g.Idle != 0 && (g.Idle < time.Second || g.Idle > 24*time.Hour):
		return bad("grants.idle_timeout", "%v: want 1s to 24h", g.Idle)
	case g.Threshold > 100:
		return bad("grants.threshold_percent", "%d: want 1 to 100", g.Threshold)
	case g.FinalUnit != "" && g.FinalUnit != "stop" && g.FinalUnit != "continue":
		return bad("grants.final_unit", "%q: want stop or continue", g.FinalUnit)
	case g.Grace != 0 && g.FinalUnit != "continue":
		return bad("grants.grace_units", "a grace goes with final_unit: continue")
	}
	return nil
}

// DefaultLateFold is corrections.fold's default.
const DefaultLateFold = 10 * time.Second

// setTimeDefaults fills in the clock and the late fold.
func (c *Config) setTimeDefaults() {
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Corrections.Fold == 0 {
		c.Corrections.Fold = DefaultLateFold
	}
}

// CommitConfig tunes group commit (see store.Options).
type CommitConfig struct {
	MaxBatch int           `yaml:"max_batch"`
	Linger   time.Duration `yaml:"linger"`
	Gap      time.Duration `yaml:"gap"`
	// Interval, for flash storage, makes the tickets that arrive within it
	// share one durable commit: a batch commits Interval after its first
	// ticket (or when it is full), so a receipt waits at most Interval
	// more. It replaces Linger and Gap; 0 (the default) is off. At most
	// MaxCommitInterval.
	Interval time.Duration `yaml:"interval"`
	// Checkpoint is the longest a committed batch waits in the journal for
	// the checkpoint that writes it into the state file; JournalBytes
	// checkpoints sooner, once the journal holds that much (see
	// store.Options). Longer and larger write less to flash, and cost a
	// longer replay after a crash and more memory.
	Checkpoint   time.Duration `yaml:"checkpoint"`
	JournalBytes int64         `yaml:"journal_bytes"`
}

// MaxCommitInterval bounds commit.interval: a receipt that waits longer
// than a device's own timeout is sent again.
const MaxCommitInterval = 5 * time.Second

// storeWait is the store's Linger and Gap for these settings.
func (c CommitConfig) storeWait() (linger, gap time.Duration) {
	if c.Interval > 0 {
		return c.Interval, 0
	}
	return c.Linger, c.Gap
}

// LoadConfig reads a configuration file; path "" gives the defaults.
// Unknown fields and bad values are errors naming the field.
func LoadConfig(path string) (*Config, error) { return LoadConfigWithDataDir(path, "") }

// LoadConfigWithDataDir is LoadConfig with the data directory replaced
// (when dataDir is not empty): the paths that default to it follow it.
func LoadConfigWithDataDir(path, dataDir string) (*Config, error) {
	c := &Config{}
	var data []byte
	if path != "" {
		b, err := os.ReadFile(path)
		data = b
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w:\n%v", ErrConfig, yamlErrors(path, b, err))
		}
	}
	if dataDir != "" {
		c.DataDir = dataDir
	}
	if err := c.setDefaults(); err != nil {
		return nil, err
	}
	if err := c.validate(path); err != nil {
		var fe *fieldError
		if errors.As(err, &fe) && data != nil {
			var root yaml.Node
			if yaml.Unmarshal(data, &root) == nil {
				if line := lineOfPath(&root, fe.field); line > 0 {
					return nil, fmt.Errorf("%w: %s:%d: %s: %s", ErrConfig, path, line, fe.field, fe.msg)
				}
			}
		}
		return nil, err
	}
	return c, nil
}

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		c.DataDir = "farthing-data"
	}
	if c.KeyFile == "" {
		c.KeyFile = filepath.Join(c.DataDir, "gateway.key")
	}
	if c.Tariffs == "" {
		c.Tariffs = filepath.Join(c.DataDir, "tariffs.yaml")
	}
	if c.Devices == "" {
		c.Devices = filepath.Join(c.DataDir, "devices.yaml")
	}
	if c.MQTT.Mode == "" {
		c.MQTT.Mode = "embedded"
	}
	if c.MQTT.Listen == "" {
		c.MQTT.Listen = "127.0.0.1:1883"
	}
	if c.MQTT.SessionExpiry <= 0 {
		c.MQTT.SessionExpiry = time.Hour
	}
	if c.MQTT.TopicPrefix == "" {
		c.MQTT.TopicPrefix = protocol.DefaultTopicPrefix
	}
	if c.DTLS.Listen == "" {
		c.DTLS.Listen = "127.0.0.1:5684"
	}
	if c.HTTP.Console == "" {
		c.HTTP.Console = "on"
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = "127.0.0.1:9100"
	}
	if c.Operator.Socket == "" {
		c.Operator.Socket = filepath.Join(c.DataDir, operator.Socket)
	}
	if c.Limits.MaxStoreBytes == 0 {
		c.Limits.MaxStoreBytes = 1 << 30
	}
	if c.Limits.WarnStoreBytes == 0 {
		c.Limits.WarnStoreBytes = c.Limits.MaxStoreBytes / 10 * 8
	}
	if c.Limits.MaxClockSkew == 0 {
		c.Limits.MaxClockSkew = 48 * time.Hour
	}
	if c.Limits.RetryAfter == 0 {
		c.Limits.RetryAfter = 5 * time.Second
	}
	if c.Limits.AuditRetention == 0 {
		c.Limits.AuditRetention = 24 * time.Hour
	}
	switch c.Audit.Sink {
	case "":
		c.Audit.Sink = "files"
	case "files", "off":
	default:
		return fmt.Errorf("%w: audit.sink: %q: want files or off", ErrConfig, c.Audit.Sink)
	}
	if c.Audit.Dir == "" {
		c.Audit.Dir = filepath.Join(c.DataDir, "audit")
	}
	if c.Audit.Rotate <= 0 {
		c.Audit.Rotate = time.Hour
	}
	for i := range c.Providers {
		if c.Providers[i].Window == 0 {
			c.Providers[i].Window = time.Hour
		}
	}
	if err := c.Fraud.Normalize(); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c.MQTT.DoorConfig.SetDefaults()
	c.DTLS.Limits.SetDefaults()
	c.Forward.SetDefaults()
	c.Commit.setDefaults()
	c.setTimeDefaults()
	return nil
}

// validate checks the group commit's and the checkpoint's settings,
// reporting a bad one with bad.
func (c *CommitConfig) validate(bad func(field, format string, args ...any) error) error {
	switch {
	case c.MaxBatch < 0 || c.Linger < 0 || c.Gap < 0 || c.Interval < 0:
		return bad("commit", "negative value")
	case c.Checkpoint < time.Second || c.Checkpoint > time.Hour:
		return bad("commit.checkpoint", "%v: want 1s to 1h", c.Checkpoint)
	case c.JournalBytes < 64<<10 || c.JournalBytes > 1<<30:
		return bad("commit.journal_bytes", "%d: want 64 KiB to 1 GiB", c.JournalBytes)
	case c.Interval > MaxCommitInterval:
		return bad("commit.interval", "%v: at most %v (a receipt waits that long)", c.Interval, MaxCommitInterval)
	}
	return nil
}

// setDefaults fills in the group commit's and the checkpoint's defaults.
func (c *CommitConfig) setDefaults() {
	if c.MaxBatch == 0 {
		c.MaxBatch = store.DefaultMaxBatch
	}
	if c.Checkpoint == 0 {
		c.Checkpoint = store.DefaultCheckpointEvery
	}
	if c.JournalBytes == 0 {
		c.JournalBytes = store.DefaultJournalBytes
	}
	if c.Linger == 0 && c.Gap == 0 {
		c.Linger, c.Gap = DefaultCommitLinger, DefaultCommitGap
	}
}

// The group commit's default wait (see store.Options): a busy gateway's
// committer waits for more tickets while they keep coming, each within
// DefaultCommitGap of the last, for at most DefaultCommitLinger. Over
// CoAP/DTLS, whose tickets reach the committer one by one as the door
// decrypts them, it tripled the throughput of 1,000 devices on one core
// (farthing bench --pin --only coap: 1,406 to 3,284-4,166 tickets/s);
// an idle gateway commits a lone ticket at once.
const (
	DefaultCommitLinger = 2 * time.Millisecond
	DefaultCommitGap    = 200 * time.Microsecond
)

// PrintConfig writes cfg as YAML, every field with its effective value
// (defaults filled in), for `farthingd --print-config`. Secrets
// (passwords, header values) are not printed.
func PrintConfig(w io.Writer, cfg *Config) error {
	c := *cfg
	c.Upstreams = slices.Clone(cfg.Upstreams)
	redact := func(s *string) {
		if *s != "" {
			*s = "(secret, not printed)"
		}
	}
	redact(&c.MQTT.Password)
	redact(&c.Control.Password)
	if len(c.Control.Header) > 0 {
		h := map[string]string{}
		for k := range c.Control.Header {
			h[k] = "(not printed)"
		}
		c.Control.Header = h
	}
	for i := range c.Upstreams {
		redact(&c.Upstreams[i].Password)
		if len(c.Upstreams[i].Header) > 0 {
			h := map[string]string{}
			for k := range c.Upstreams[i].Header {
				h[k] = "(not printed)"
			}
			c.Upstreams[i].Header = h
		}
	}
	note := ""
	if c.GatewayID == "" {
		note = "# gateway_id is derived from the gateway key at start: gw- and its key id in hex\n"
		if k, err := keyfile.Load(c.KeyFile); err == nil && k.Private != nil {
			c.GatewayID = protocol.DefaultGatewayID(protocol.KeyIDOf(protocol.AlgEdDSA, k.Private.Public().(ed25519.PublicKey)))
			if c.MQTT.ClientID == "" {
				c.MQTT.ClientID = "farthingd-" + c.GatewayID
			}
			note = ""
		}
	}
	b, err := yaml.Marshal(&c)
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, note+string(b))
	return err
}

// setKeyDefaults fills in what defaults to the gateway key: the gateway
// id and, from it, the MQTT client id of external mode.
func (c *Config) setKeyDefaults(kid [protocol.KeyIDLen]byte) {
	if c.GatewayID == "" {
		c.GatewayID = protocol.DefaultGatewayID(kid)
	}
	if c.MQTT.ClientID == "" {
		c.MQTT.ClientID = "farthingd-" + c.GatewayID
	}
}

func (c *Config) validate(path string) error {
	bad := func(field, format string, args ...any) error {
		return &fieldError{file: path, field: field, msg: fmt.Sprintf(format, args...)}
	}
	if c.GatewayID != "" && !protocol.ValidName(c.GatewayID, protocol.MaxDeviceIDLen) {
		return bad("gateway_id", "%q: use 1..64 of [A-Za-z0-9._-]", c.GatewayID)
	}
	if c.KeyPKCS11 != nil {
		if err := c.KeyPKCS11.Validate(); err != nil {
			return bad("key_pkcs11", "%v", err)
		}
	}
	switch c.MQTT.Mode {
	case "embedded":
	case "external":
		if c.MQTT.Broker == "" {
			return bad("mqtt.broker", "required in external mode")
		}
	default:
		return bad("mqtt.mode", "%q: want embedded or external", c.MQTT.Mode)
	}
	if err := c.validateLists(bad); err != nil {
		return err
	}
	if f := c.Corrections.Fold; f < time.Second || f > time.Hour {
		return bad("corrections.fold", "%v: want 1s to 1h", f)
	}
	if err := c.Commit.validate(bad); err != nil {
		return err
	}
	if err := c.Grants.validate(bad); err != nil {
		return err
	}
	if c.HTTP.Console != "on" && c.HTTP.Console != "off" {
		return bad("http.console", "%q: want on or off", c.HTTP.Console)
	}
	if err := c.Operator.Validate(); err != nil {
		return bad("operator", "%v", err)
	}
	if c.MQTT.ReceiptQoS != 0 && c.MQTT.ReceiptQoS != 1 {
		return bad("mqtt.receipt_qos", "%d: want 0 or 1", c.MQTT.ReceiptQoS)
	}
	return nil
}

// validateLists checks the accounts, providers and upstreams: each valid,
// and none twice.
func (c *Config) validateLists(bad func(field, format string, args ...any) error) error {
	seen := map[string]bool{}
	for i, a := range c.Accounts {
		f := fmt.Sprintf("accounts[%d]", i)
		if _, err := a.Opening(); err != nil {
			return bad(f, "%v", err)
		}
		if _, err := a.Caps(); err != nil {
			return bad(f, "%v", err)
		}
		if _, err := a.LowBalanceLevel(); err != nil {
			return bad(f, "%v", err)
		}
		if seen[a.ID] {
			return bad(f+".id", "account %q twice", a.ID)
		}
		seen[a.ID] = true
	}
	seen = map[string]bool{}
	for i, p := range c.Providers {
		f := fmt.Sprintf("providers[%d]", i)
		if !protocol.ValidName(p.ID, protocol.MaxDeviceIDLen) {
			return bad(f+".id", "%q: use 1..64 of [A-Za-z0-9._-]", p.ID)
		}
		if seen[p.ID] {
			return bad(f+".id", "provider %q twice", p.ID)
		}
		seen[p.ID] = true
		if _, err := p.Policy(); err != nil {
			return bad(f, "%v", err)
		}
	}
	seen = map[string]bool{}
	for i, u := range c.Upstreams {
		f := fmt.Sprintf("upstreams[%d]", i)
		if !protocol.ValidName(u.Name, 64) || seen[u.Name] {
			return bad(f+".name", "%q: want a unique name of [A-Za-z0-9._-]", u.Name)
		}
		seen[u.Name] = true
		switch u.Type {
		case "mqtt", "http", "jetstream":
		default:
			return bad(f+".type", "%q: want mqtt, http or jetstream", u.Type)
		}
		if u.URL == "" {
			return bad(f+".url", "required")
		}
	}
	return c.Control.validate(bad)
}

// validate checks the control channel's section.
func (c *ControlConfig) validate(bad func(field, format string, args ...any) error) error {
	for i, g := range c.Groups {
		if !protocol.ValidName(g, protocol.MaxDeviceIDLen) {
			return bad(fmt.Sprintf("control.groups[%d]", i), "%q: use 1..64 of [A-Za-z0-9._-]", g)
		}
	}
	if c.PollWait <= 0 {
		c.PollWait = 25 * time.Second
	}
	if c.MaxSkew <= 0 {
		c.MaxSkew = 5 * time.Minute
	}
	switch c.Type {
	case "":
		return nil
	case "mqtt", "http", "jetstream":
	default:
		return bad("control.type", "%q: want jetstream, mqtt or http", c.Type)
	}
	if c.URL == "" {
		return bad("control.url", "required")
	}
	if len(c.Trust) == 0 {
		return bad("control.trust", "a control channel needs at least one provider control key")
	}
	return nil
}

// Opening returns the account's opening state.
func (a AccountConfig) Opening() (metering.Account, error) {
	acct := metering.Account{ID: a.ID, Currency: metering.Currency(a.Currency)}
	if !protocol.ValidName(a.ID, protocol.MaxAccountLen) {
		return acct, fmt.Errorf("id %q: use 1..64 of [A-Za-z0-9._-]", a.ID)
	}
	if !acct.Currency.Valid() {
		return acct, fmt.Errorf("currency %q: want an ISO 4217 code", a.Currency)
	}
	switch a.Kind {
	case "prepaid":
		acct.Kind = metering.Prepaid
	case "postpaid":
		acct.Kind = metering.Postpaid
	default:
		return acct, fmt.Errorf("kind %q: want prepaid or postpaid", a.Kind)
	}
	var err error
	if a.Balance != "" {
		if acct.Balance, err = metering.ParseNanos(a.Balance); err != nil {
			return acct, fmt.Errorf("balance: %v", err)
		}
	}
	if a.CreditLimit != "" {
		if acct.Kind != metering.Postpaid {
			return acct, fmt.Errorf("credit_limit: only postpaid accounts have one")
		}
		if acct.CreditLimit, err = metering.ParseNanos(a.CreditLimit); err != nil || acct.CreditLimit < 0 {
			return acct, fmt.Errorf("credit_limit %q: want a decimal ≥ 0", a.CreditLimit)
		}
	}
	return acct, nil
}

// Policy returns the provider's settlement policy.
func (p ProviderConfig) Policy() (metering.Policy, error) {
	pol := metering.Policy{Length: p.Window.Milliseconds()}
	if p.Threshold != "" {
		m, err := metering.ParseMoney(p.Threshold)
		if err != nil {
			return pol, fmt.Errorf("threshold: %v", err)
		}
		pol.Threshold = m.Nanos
	}
	return pol, pol.Validate()
}

// fieldError is a configuration value that decoded but is wrong; it names
// the YAML path of the field.
type fieldError struct{ file, field, msg string }

func (e *fieldError) Error() string {
	return fmt.Sprintf("%s: %s: %s: %s", ErrConfig.Error(), e.file, e.field, e.msg)
}

func (e *fieldError) Unwrap() error { return ErrConfig }
