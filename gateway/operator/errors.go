package operator

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// ErrNoSuchDevice: the device is not in the registry (404 on the API).
var ErrNoSuchDevice = errors.New("no such device in the registry")

// decodeBody reads r's JSON body (at most limit bytes, no unknown field)
// into v; on a bad body it answers 400 with want, what a good one looks
// like, and reports false.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any, want string) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		http.Error(w, want+": "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}
