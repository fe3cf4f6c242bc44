package operator

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
)

// BackupChecksumTrailer is the HTTP trailer of GET /backup that carries the
// SHA-256 (hex) of the bytes sent.
const BackupChecksumTrailer = "X-Farthing-Sha256"

// backupRoutes serves GET /backup on the operator API: a consistent copy
// of the state file, taken in one read transaction while the gateway goes
// on (bbolt's Tx.WriteTo), streamed with its SHA-256 in a trailer. The
// header X-Farthing-Stream names the aggregate stream it was taken from.
func (a *API) backupRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /backup", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Trailer", BackupChecksumTrailer)
		w.Header().Set("X-Farthing-Stream", a.ingest.Books().Stream().String())
		h := sha256.New()
		n, err := a.store.WriteBackup(io.MultiWriter(w, h))
		if err != nil {
			// Headers are gone: the client sees a body without the trailer
			// and refuses it.
			a.log.Error("backup failed", "error", err, "bytes", n, "credential", CredentialOf(r))
			return
		}
		w.Header().Set(BackupChecksumTrailer, hex.EncodeToString(h.Sum(nil)))
		a.metrics.Transport.WithLabelValues("operator", "backup").Inc()
		a.log.Info("backup taken", "bytes", n, "credential", CredentialOf(r))
	})
}
