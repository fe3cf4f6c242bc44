package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/farthing-iot/farthing/cmd/farthing/internal/sim"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
)

// runSim drives registered devices against a broker.
func runSim(e *env, args []string) error {
	fs := newFlags("sim")
	data := fs.String("data", defaultData, "the gateway's data directory")
	regFile := fs.String("registry", "", "device registry (default DATA/devices.yaml)")
	keys := fs.String("keys", "", "directory with the devices' secret files (default DATA/device-keys)")
	broker := fs.String("broker", "tcp://127.0.0.1:1883", "MQTT broker")
	prefix := fs.String("prefix", protocol.DefaultTopicPrefix, "topic prefix")
	n := fs.Int("devices", 0, "use the first N matching devices (default all)")
	typ := fs.String("type", "any", "hmac, ed25519 or any")
	rate := fs.Float64("rate", 1000, "tickets per second over all devices")
	dur := fs.Duration("duration", 10*time.Second, "how long to send")
	inflight := fs.String("inflight", "4", "tickets a device may have without a receipt: N, or A-B to spread the devices over A..B")
	slice := fs.Duration("slice", 5*time.Second, "also report the receipt latency by slices of this length (--json)")
	bare := fs.Bool("bare", false, "count any answer as a receipt, unread (a server with no gateway behind it)")
	payword := fs.Bool("payword", false, "payword devices: each commits to a hash chain, then sends paywords (10 units of its first meter a step)")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	transport := fs.String("transport", "mqtt", "mqtt or coaps")
	coapAddr := fs.String("coap", "127.0.0.1:5684", "the gateway's CoAP-over-DTLS address (with --transport coaps)")
	hold := fs.Duration("hold", 0, "keep the sessions open and idle this long after the run")
	fleet := fs.String("fleet", "", "run as a fleet of firmware (MQTT): each device's seq, register epoch and register are kept in this file\n"+
		"and go on in the next run; devices reconnect with backoff and send a ticket again until its final receipt")
	fresh := fs.Bool("fresh", false, "with --fleet: start the fleet file over (a new register epoch, seqs above every earlier run's)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *fleet != "" && (*transport != "mqtt" || *payword || *bare || *hold > 0) {
		return usageError{"--fleet runs over MQTT, without --payword, --bare or --hold"}
	}
	if *regFile == "" {
		*regFile = filepath.Join(*data, "devices.yaml")
	}
	inMin, inMax, err := parseRange(*inflight)
	if err != nil {
		return usageError{fmt.Sprintf("--inflight %q: %v", *inflight, err)}
	}
	if *keys == "" {
		*keys = filepath.Join(*data, "device-keys")
	}
	if *transport != "mqtt" && *transport != "coaps" {
		return usageError{fmt.Sprintf("--transport %q: want mqtt or coaps", *transport)}
	}
	if *typ != "any" && *typ != "hmac" && *typ != "ed25519" {
		return usageError{fmt.Sprintf("--type %q: want hmac, ed25519 or any", *typ)}
	}
	devs, err := simDevices(*regFile, *keys, *typ, *n)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *fleet != "" {
		rep, err := sim.RunFleet(ctx, sim.FleetConfig{Broker: *broker, Prefix: *prefix, Devices: devs, Rate: *rate, Duration: *dur,
			File: *fleet, Fresh: *fresh, Progress: e.stderr})
		if err != nil {
			return err
		}
		if *jsonOut {
			return json.NewEncoder(e.stdout).Encode(rep)
		}
		fmt.Fprint(e.stdout, rep)
		return nil
	}
	rep, err := sim.Run(ctx, sim.Config{Broker: *broker, Prefix: *prefix, Devices: devs, Rate: *rate, Duration: *dur,
		InFlight: inMax, InFlightMin: inMin, Progress: e.stderr, Transport: *transport, CoAPAddr: *coapAddr, Hold: *hold, Bare: *bare, Slice: *slice, Payword: *payword})
	if err != nil {
		return err
	}
	if *jsonOut {
		return json.NewEncoder(e.stdout).Encode(rep)
	}
	fmt.Fprint(e.stdout, rep)
	return nil
}

// simDevices are the registry's active devices of key type typ ("any":
// all), the first n of them (0: all), with their secrets (an Ed25519
// device's private key from its key file in keys).
func simDevices(regFile, keys, typ string, n int) ([]sim.Device, error) {
	rf, err := registry.ReadFile(regFile)
	if err != nil {
		return nil, err
	}
	var devs []sim.Device
	for _, d := range rf.Devices {
		if d.Disabled || d.Revoked || (typ != "any" && d.KeyType != typ) {
			continue
		}
		sec, err := registry.SecretsOf(d)
		if err != nil {
			return nil, err
		}
		if d.KeyType == "ed25519" {
			k, err := keyfile.Load(filepath.Join(keys, d.ID+".key"))
			if err != nil {
				return nil, fmt.Errorf("device %s: %w", d.ID, err)
			}
			sec.Private = k.Private
		}
		devs = append(devs, sim.Device{Entry: d, Secrets: sec})
		if n > 0 && len(devs) == n {
			break
		}
	}
	if len(devs) == 0 {
		return nil, fmt.Errorf("%s: no %s devices (add some with farthing device add)", regFile, typ)
	}
	return devs, nil
}

// parseRange parses "N" or "A-B" (1 <= A <= B).
func parseRange(s string) (lo, hi int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		b = a
	}
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || lo < 1 || hi < lo {
		return 0, 0, errors.New("want N or A-B with 1 <= A <= B")
	}
	return lo, hi, nil
}
