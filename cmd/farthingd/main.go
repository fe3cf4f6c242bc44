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
	"syscall"
	_ "time/tzdata" // tariffs name IANA zones; do not depend on the host's

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("farthingd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (YAML); default: built-in defaults")
	dataDir := fs.String("data", "", "data directory (overrides the configuration)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	printConfig := fs.Bool("print-config", false, "print the effective configuration (every setting, defaults filled in; secrets not printed) and exit")
	showVersion := fs.Bool("version", false, "print the version (module version, VCS revision, Go version) and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
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
	go func() {
		for range hup {
			g.Reload()
		}
	}()
	log.Info("farthingd starting", "gateway", cfg.GatewayID, "data", cfg.DataDir, "mqtt", cfg.MQTT.Mode)
	if err := g.Run(ctx); err != nil {
		log.Error("farthingd stopped with an error", "error", err)
		return 1
	}
	return 0
}
