package main

import (
	"context"
	"errors"
	"os/signal"
	"syscall"
	"time"

	"github.com/farthing-iot/farthing/cmd/farthing/internal/demo"
)

// runDemo runs the one-command demo.
func runDemo(e *env, args []string) error {
	fs := newFlags("demo")
	rate := fs.Float64("rate", 600, "tickets per second")
	dur := fs.Duration("duration", 4*time.Second, "how long to send")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := demo.Run(ctx, demo.Options{Rate: *rate, Duration: *dur, Out: e.stdout})
	if err != nil {
		return err
	}
	if !res.Balanced {
		return errors.New("the books do not balance")
	}
	return nil
}
