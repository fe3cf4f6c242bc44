package gateway

import "github.com/farthing-iot/farthing/gateway/registry"

// The device registry lives in package registry, which tools that only
// provision or simulate devices import without the daemon. These names
// keep the gateway's own API as it was.
type (
	// DeviceEntry is one device in devices.yaml (registry.Entry).
	DeviceEntry = registry.Entry
	// RegistryFile is the layout of devices.yaml (registry.File).
	RegistryFile = registry.File
	// Device is a registry entry with its keys derived (registry.Device).
	Device = registry.Device
	// Registry is a snapshot of the device registry (registry.Registry).
	Registry = registry.Registry
	// DeviceSecrets is what a provisioned device holds (registry.Secrets).
	DeviceSecrets = registry.Secrets
	// Known is what registry entries are checked against (registry.Known).
	Known = registry.Known
)

// Registry functions (see package registry).
var (
	NewDevice         = registry.NewDevice
	SecretsOf         = registry.SecretsOf
	DTLSPSKOf         = registry.DTLSPSKOf
	ReadRegistryFile  = registry.ReadFile
	WriteRegistryFile = registry.WriteFile
	BuildRegistry     = registry.Build
)
