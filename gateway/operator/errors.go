package operator

import "errors"

// ErrNoSuchDevice: the device is not in the registry (404 on the API).
var ErrNoSuchDevice = errors.New("no such device in the registry")
