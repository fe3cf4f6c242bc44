package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/net/netutil"

	"github.com/farthing-iot/farthing/gateway/operator"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
	"github.com/farthing-iot/farthing/provider/jsrecv"
	"github.com/farthing-iot/farthing/provider/mqttrecv"
)

// fleetOptions are farthing receive's control channel flags.
type fleetOptions struct {
	controlKey, http, pushTokenFile, pollTokenFile, groups string
	jetstream, mqtt, mqttUser, mqttPassword                string
	republish                                              time.Duration
	access                                                 provider.FleetAccess
}

func (o *fleetOptions) flags(fs *flag.FlagSet) {
	fs.StringVar(&o.controlKey, "control-key", "", "the provider's control key (Ed25519, 0600): turns on the control channel; gateways trust its\npublic key (control.trust)")
	fs.StringVar(&o.http, "fleet-http", "", "serve the fleet API on this address: POST /fleet/commands, GET /fleet/status (with\n--fleet-token-file) and gateways' polls, GET "+protocol.CommandsPath+" (with --poll-token-file)")
	fs.StringVar(&o.pushTokenFile, "fleet-token-file", "", "a file (0600) holding the token that pushes commands and reads the fleet's status")
	fs.StringVar(&o.pollTokenFile, "poll-token-file", "", "a file (0600) holding the token gateways poll for commands with")
	fs.StringVar(&o.groups, "groups", "", "a YAML file of the fleet's groups: groups: {NAME: [GATEWAY-ID, …]}")
	fs.StringVar(&o.jetstream, "commands-jetstream", "", "publish commands to this NATS server's JetStream (stream "+protocol.DefaultCommandStream+")")
	fs.StringVar(&o.mqtt, "commands-mqtt", "", "publish commands to this MQTT broker (QoS 1), again every --commands-republish while a gateway has not answered")
	fs.DurationVar(&o.republish, "commands-republish", 30*time.Second, "how often commands some gateway has not answered are published again over MQTT")
	fs.StringVar(&o.mqttUser, "commands-mqtt-user", "", "MQTT user name for --commands-mqtt")
	fs.StringVar(&o.mqttPassword, "commands-mqtt-password", "", "MQTT password for --commands-mqtt")
}

// check reads the tokens.
func (o *fleetOptions) check() error {
	if o.controlKey == "" {
		if o.http != "" || o.jetstream != "" || o.mqtt != "" {
			return usageError{"--fleet-http, --commands-jetstream and --commands-mqtt need --control-key"}
		}
		return nil
	}
	for _, t := range []struct {
		file string
		dst  *[32]byte
		flag string
	}{{o.pushTokenFile, &o.access.Push, "--fleet-token-file"}, {o.pollTokenFile, &o.access.Poll, "--poll-token-file"}} {
		if t.file == "" {
			continue
		}
		h, err := operator.LoadToken(t.file)
		if err != nil {
			return usageError{t.flag + ": " + err.Error()}
		}
		*t.dst = h
	}
	return nil
}

// start turns the receiver's control channel on, if asked for, and
// returns what closes its publishers.
func (o *fleetOptions) start(r *provider.Receiver) (func(), error) {
	if o.controlKey == "" {
		return func() {}, nil
	}
	k, err := keyfile.Load(o.controlKey)
	if err != nil {
		return nil, fmt.Errorf("--control-key: %w", err)
	}
	if k.Private == nil {
		return nil, fmt.Errorf("--control-key: %s is a %s, want an Ed25519 private key (farthing keygen)", o.controlKey, k.Kind())
	}
	signer, err := protocol.NewEd25519Signer(k.Private)
	if err != nil {
		return nil, err
	}
	f := &provider.Fleet{Key: signer}
	if o.groups != "" {
		b, err := os.ReadFile(o.groups)
		if err != nil {
			return nil, fmt.Errorf("--groups: %w", err)
		}
		var g struct {
			Groups map[string][]string `yaml:"groups"`
		}
		if err := yaml.Unmarshal(b, &g); err != nil {
			return nil, fmt.Errorf("--groups %s: %w", o.groups, err)
		}
		f.Groups = g.Groups
	}
	var closers []func()
	if o.jetstream != "" {
		p, err := jsrecv.NewPublisher(o.jetstream, 1)
		if err != nil {
			return nil, err
		}
		f.Publishers, closers = append(f.Publishers, p), append(closers, p.Close)
	}
	if o.mqtt != "" {
		p := mqttrecv.NewPublisher(o.mqtt, "farthing-fleet", o.mqttUser, o.mqttPassword)
		f.Publishers, closers = append(f.Publishers, p), append(closers, p.Close)
	}
	r.SetFleet(f)
	return func() {
		for _, c := range closers {
			c()
		}
	}, nil
}

// serve starts the fleet API listener and the loop that publishes again
// what gateways have not answered.
func (o *fleetOptions) serve(ctx context.Context, e *env, r *provider.Receiver, log *slog.Logger, serve func(net.Listener, *http.Server), feeds *sync.WaitGroup) error {
	if o.controlKey == "" {
		return nil
	}
	feeds.Add(1)
	go func() {
		defer feeds.Done()
		t := time.NewTicker(max(o.republish, time.Second))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if n, err := r.Republish(ctx); err != nil {
					log.Warn("fleet: publishing commands again failed", "error", err)
				} else if n > 0 {
					log.Info("fleet: commands not yet answered by every gateway published again", "commands", n)
				}
			}
		}
	}()
	if o.http == "" {
		return nil
	}
	l, err := net.Listen("tcp", o.http)
	if err != nil {
		return err
	}
	// A poll waits up to a minute: the write deadline leaves it room.
	serve(netutil.LimitListener(l, receiveMaxConns), &http.Server{Handler: r.FleetHandler(log, o.access), ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 90 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)})
	fmt.Fprintf(e.stderr, "fleet API on http://%s/fleet/commands\n", l.Addr())
	return nil
}
