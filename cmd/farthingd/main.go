// Command farthingd is the Farthing edge gateway daemon.
//
//	farthingd [--config FILE] [--data DIR] [--log-level debug|info|warn|error] [--print-config]
//
// With no flags it starts on localhost with an embedded MQTT broker
// (127.0.0.1:1883), keeps its state under ./farthing-data and creates its
// Ed25519 key there on first start. SIGTERM or SIGINT stops it gracefully:
// tickets in flight finish their commits. SIGHUP reloads the device and
// tariff files (so does editing them).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
	_ "time/tzdata" // tariffs name IANA zones; do not depend on the host's

	sd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("farthingd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", "", "configuration file (YAML); default: built-in defaults")
	dataDir := fs.String("data", "", "data directory (overrides the configuration)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	printConfig := fs.Bool("print-config", false, "print the effective configuration (every setting, defaults filled in; secrets not printed) and exit")
	showVersion := fs.Bool("version", false, "print the version (module version, VCS revision, Go version) and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(stdout, fs)
			return 0
		}
		fmt.Fprintf(stderr, "farthingd: %v; see farthingd --help\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "farthingd: unexpected argument %q; see farthingd --help\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("farthingd"))
		return 0
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "farthingd: --log-level %q: want debug, info, warn or error\n", *level)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	cfg, err := gateway.LoadConfigWithDataDir(*configPath, *dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "farthingd: %v\n", err)
		return 2
	}
	if *printConfig {
		if err := gateway.PrintConfig(stdout, cfg); err != nil {
			fmt.Fprintf(stderr, "farthingd: %v\n", err)
			return 1
		}
		return 0
	}
	g, err := gateway.New(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "farthingd: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var wg sync.WaitGroup // the reloader and the service manager's notifier
	defer wg.Wait()
	sctx, stopHelpers := context.WithCancel(context.Background())
	defer stopHelpers()
	wg.Add(2)
	go func() { defer wg.Done(); reloadOnHUP(sctx, g, hup, log) }()
	go func() { defer wg.Done(); notifyServiceManager(sctx, ctx, g, log) }()
	log.Info("farthingd starting", "version", version.String("farthingd"), "gateway", cfg.GatewayID, "data", cfg.DataDir, "mqtt", cfg.MQTT.Mode)
	err = g.Run(ctx)
	stopHelpers()
	if err != nil {
		log.Error("farthingd stopped with an error", "error", err)
		return 1
	}
	return 0
}

// printHelp writes the usage, every flag with its default, and examples.
func printHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: farthingd [--config FILE] [--data DIR] [--log-level debug|info|warn|error] [--print-config] [--version]")
	fmt.Fprintln(w, "\nThe Farthing edge gateway. Without flags: an embedded MQTT broker on 127.0.0.1:1883, CoAP/DTLS on")
	fmt.Fprintln(w, "127.0.0.1:5684, metrics and the console on 127.0.0.1:9100, state in ./farthing-data. SIGTERM stops it")
	fmt.Fprintln(w, "gracefully; SIGHUP reloads devices and tariffs. Every setting: docs/reference/config.md (installed as /usr/share/doc/farthing/CONFIG.md).")
	fmt.Fprintln(w, "\nflags of farthingd:")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	fmt.Fprintln(w, "\nexamples:")
	fmt.Fprintln(w, "  farthingd --config farthingd.yaml")
	fmt.Fprintln(w, "  farthingd --config /etc/farthing/farthingd.yaml --print-config")
	fmt.Fprintln(w, "  farthingd --data /var/lib/farthing --log-level debug")
}

// reloadOnHUP re-reads the device and tariff files on every SIGHUP until
// ctx ends, telling a service manager that it is reloading and when it is
// ready again.
func reloadOnHUP(ctx context.Context, g *gateway.Gateway, hup <-chan os.Signal, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			sdNotify(log, "RELOADING=1")
			if err := g.Reload(); err != nil {
				sdNotify(log, "READY=1\nSTATUS=reload failed, serving with the previous files: "+err.Error())
				continue
			}
			sdNotify(log, "READY=1\nSTATUS=serving (reloaded)")
		}
	}
}

// watchdogStall is how long housekeeping may go without a round before
// the watchdog stops being fed: a gateway whose store or loop is stuck is
// restarted by its service manager.
const watchdogStall = 30 * time.Second

// notifyServiceManager speaks systemd's notify protocol when
// NOTIFY_SOCKET is set (Type=notify): READY=1 once every transport
// listens, WATCHDOG=1 at half the watchdog interval while housekeeping
// keeps its rounds (WatchdogSec=), STOPPING=1 when stop (the signal
// context) ends. Without NOTIFY_SOCKET it does nothing.
func notifyServiceManager(ctx, stop context.Context, g *gateway.Gateway, log *slog.Logger) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-g.Ready():
		sdNotify(log, sd.SdNotifyReady+"\nSTATUS=serving")
	}
	interval, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog settings not understood; not feeding it", "error", err)
	}
	var feed <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		feed = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop.Done():
			sdNotify(log, sd.SdNotifyStopping+"\nSTATUS=stopping: finishing tickets in flight")
			return
		case <-feed:
			if since := g.SinceHousekeeping(); since > watchdogStall {
				log.Error("housekeeping has not run; not feeding the watchdog", "since", since.Round(time.Second))
				continue
			}
			sdNotify(log, sd.SdNotifyWatchdog)
		}
	}
}

func sdNotify(log *slog.Logger, state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		log.Warn("notifying the service manager failed", "error", err)
	}
}
