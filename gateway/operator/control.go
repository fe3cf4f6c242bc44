package operator

import (
	"net/http"
	"time"
)

// controlRoutes serves GET /control: what the control channel left in the
// books (ledger.ControlView) — the tariff versions, each sequence's
// progress, the devices provisioned and the keys and vouchers revoked.
func (a *API) controlRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /control", func(w http.ResponseWriter, _ *http.Request) {
		v, err := a.ingest.Books().Control(&a.ingest.Snapshot().Terms, time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, a.log, v)
	})
}
