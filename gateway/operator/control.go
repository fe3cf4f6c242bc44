package operator

import (
	"net/http"
	"time"

	"github.com/farthing-iot/farthing/gateway/ledger"
)

// Versions is GET /tariffs/versions: the tariff versions the books record
// and the control channel's progress per sequence.
type Versions struct {
	Versions []ledger.TariffVersion   `json:"versions"`
	Commands []ledger.CommandProgress `json:"commands"`
}

// controlRoutes serves the tariff versions and the commands applied.
func (a *API) controlRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /tariffs/versions", func(w http.ResponseWriter, _ *http.Request) {
		books := a.ingest.Books()
		vs, _, err := books.TariffVersions(&a.ingest.Snapshot().Terms, time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		cs, err := books.Commands()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if vs == nil {
			vs = []ledger.TariffVersion{}
		}
		if cs == nil {
			cs = []ledger.CommandProgress{}
		}
		writeJSON(w, a.log, Versions{Versions: vs, Commands: cs})
	})
}
