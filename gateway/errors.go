// Package gateway is the daemon's machinery: configuration, the device
// registry, the ingest pipeline (decode, verify, dedup, price, commit,
// receipt) over a bbolt store, the MQTT transports and metrics.
package gateway

import (
	"errors"

	"github.com/farthing-iot/farthing/gateway/registry"
)

// Errors.
var (
	// ErrConfig: the configuration file is wrong; the message names the field.
	ErrConfig = errors.New("gateway: bad configuration")
	// ErrRegistry: the device registry is wrong; the message names the device and field.
	ErrRegistry = registry.ErrInvalid
)
