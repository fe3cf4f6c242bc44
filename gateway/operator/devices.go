package operator

import (
	"errors"
	"fmt"
	"net/http"
	"sort"

	"github.com/farthing-iot/farthing/gateway/entrance"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/protocol"
)

// DeviceCheck is the body of POST /devices/check: registry entries about
// to be added, checked against the running configuration before the
// device file is written (their keys are not sent).
type DeviceCheck struct {
	Devices []DeviceTerms `json:"devices"`
}

// DeviceTerms is what a registry entry charges and to whom.
type DeviceTerms struct {
	ID       string            `json:"id"`
	Account  string            `json:"account"`
	Provider string            `json:"provider"`
	Tariffs  map[string]string `json:"tariffs"`
	DailyCap string            `json:"daily_cap,omitempty"`
}

// deviceRoutes serves, on the operator API, POST /devices/check: 200 when
// every entry fits the running configuration, 422 naming the first that
// does not (device, field and why), 400 for a body that is not a check;
// GET /devices/{id}: one device's progress (DeviceStatus), 404 for a
// device not in the registry; GET /chains/{device}: its payword chains
// (ledger.ChainView: the commitment and the last payword, a proof of its
// usage that needs no trust in the gateway); POST /chains/{device}:
// register a chain's commitment at provisioning (ChainRegistration → its
// receipt); GET /devices/suspended: the devices the gateway suspended
// (ledger.Suspension); POST /devices/{id}/resume: lift a suspension
// (audited), 404 if the device was not suspended.
func (a *API) deviceRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /chains/{device}", func(w http.ResponseWriter, r *http.Request) {
		if a.ingest.Snapshot().Registry.Device(r.PathValue("device")) == nil {
			http.Error(w, ErrNoSuchDevice.Error()+": "+r.PathValue("device"), http.StatusNotFound)
			return
		}
		v, err := a.ingest.Books().Chains(r.PathValue("device"))
		answer(w, a, v, err)
	})
	m.HandleFunc("POST /chains/{device}", func(w http.ResponseWriter, r *http.Request) {
		var req ChainRegistration
		if !decodeBody(w, r, 8<<10, &req, "want {\"commitment\": \"<base64 of the COSE message>\"}") {
			return
		}
		dev := r.PathValue("device")
		if k, ok := protocol.KindOf(req.Commitment); !ok || k != protocol.KindCommitment {
			http.Error(w, "not a chain commitment (a COSE message of kind 7)", http.StatusBadRequest)
			return
		}
		if a.ingest.Snapshot().Registry.Device(dev) == nil {
			http.Error(w, ErrNoSuchDevice.Error()+": "+dev, http.StatusNotFound)
			return
		}
		res := a.ingest.Submit(r.Context(), entrance.Message{Device: dev, Payload: req.Commitment, Transport: "operator"})
		a.log.Info("payword chain registered through the operator API", "device", dev, "status", res.Receipt.Status.String(),
			"reason", res.Receipt.Reason.String(), "credential", CredentialOf(r))
		writeJSON(w, a.log, res.Receipt)
	})
	m.HandleFunc("GET /devices/{id}", func(w http.ResponseWriter, r *http.Request) {
		v, err := a.DeviceStatus(r.PathValue("id"))
		switch {
		case errors.Is(err, ledger.ErrUnknownDevice), errors.Is(err, ErrNoSuchDevice):
			http.Error(w, err.Error(), http.StatusNotFound)
		default:
			answer(w, a, v, err)
		}
	})
	m.HandleFunc("GET /devices/suspended", func(w http.ResponseWriter, _ *http.Request) {
		v, err := a.ingest.Books().Suspensions()
		answer(w, a, v, err)
	})
	m.HandleFunc("POST /devices/{id}/resume", func(w http.ResponseWriter, r *http.Request) {
		was, err := a.ingest.Resume(r.Context(), r.PathValue("id"), CredentialOf(r))
		if err == nil && !was {
			http.Error(w, "device "+r.PathValue("id")+" is not suspended", http.StatusNotFound)
			return
		}
		answer(w, a, map[string]string{"resumed": r.PathValue("id")}, err)
	})
	m.HandleFunc("POST /devices/check", func(w http.ResponseWriter, r *http.Request) {
		var req DeviceCheck
		if !decodeBody(w, r, 1<<20, &req, "want {\"devices\": [...]}") {
			return
		}
		snap := a.ingest.Snapshot()
		for _, d := range req.Devices {
			e := registry.Entry{ID: d.ID, Account: d.Account, Provider: d.Provider, Tariffs: d.Tariffs, DailyCap: d.DailyCap}
			if _, err := registry.CheckTerms(e, snap); err != nil {
				a.log.Warn("operator API: device refused by the configuration", "device", d.ID, "error", err)
				http.Error(w, fmt.Sprintf("device %s: %v", d.ID, err), http.StatusUnprocessableEntity)
				return
			}
		}
		writeJSON(w, a.log, map[string]int{"checked": len(req.Devices)})
	})
}

// ChainRegistration is the body of POST /chains/{device}: a payword
// chain's commitment, signed or MAC'd by the device as it would send it,
// registered at provisioning (for a device that does not send it itself).
// It is checked and accepted exactly as from the device; the answer is
// its receipt.
type ChainRegistration struct {
	Commitment []byte `json:"commitment"`
}

// DeviceStatus is one device as the running gateway knows it: its
// progress in the books (its last seq, each meter's epoch and register,
// its latest tickets), whether it is suspended, which transports it is
// connected over and when its last ticket came (since the gateway
// started).
type DeviceStatus struct {
	ledger.DeviceView
	Suspended     bool     `json:"suspended"`
	Online        []string `json:"online"`
	LastSeen      int64    `json:"last_seen_ms,omitempty"`
	LastTransport string   `json:"last_transport,omitempty"`
}

// DeviceStatus returns a registered device's status; a device the books
// have no ticket of has an empty view.
func (a *API) DeviceStatus(id string) (DeviceStatus, error) {
	if a.ingest.Snapshot().Registry.Device(id) == nil {
		return DeviceStatus{}, fmt.Errorf("%w: %s", ErrNoSuchDevice, id)
	}
	v, err := a.ingest.Books().Device(id, 10)
	if errors.Is(err, ledger.ErrUnknownDevice) {
		v, err = ledger.DeviceView{ID: id, Meters: []ledger.MeterView{}, Recent: []ledger.TicketRecord{}}, nil
	}
	if err != nil {
		return DeviceStatus{}, err
	}
	st := DeviceStatus{DeviceView: v, Suspended: a.ingest.Suspended(id), Online: []string{}}
	st.Online = append(st.Online, a.online(id)...)
	sort.Strings(st.Online)
	if at, tr := a.ingest.LastSeen(id); !at.IsZero() {
		st.LastSeen, st.LastTransport = at.UnixMilli(), tr
	}
	return st, nil
}
