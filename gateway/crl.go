package gateway

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"sync"
	"time"
)

// crlWatch is the DTLS client CA's certificate revocation list: the
// serials it revokes, read again when the file changes (looked at no more
// than once a second, at a handshake). A list that does not parse or is
// not signed by the client CA is refused: at startup as a configuration
// error, later with an error logged, keeping the list before it.
type crlWatch struct {
	path string
	cas  []*x509.Certificate
	log  *slog.Logger

	mu      sync.Mutex
	checked time.Time
	mtime   time.Time
	issuer  string
	serials map[string]bool
}

func newCRLWatch(path, caFile string, log *slog.Logger) (*crlWatch, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("%w: dtls.client_ca_file: %v", ErrConfig, err)
	}
	w := &crlWatch{path: path, log: log}
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			w.cas = append(w.cas, c)
		}
	}
	if err := w.load(); err != nil {
		return nil, fmt.Errorf("%w: dtls.crl_file: %v", ErrConfig, err)
	}
	return w, nil
}

// load reads the list if the file changed.
func (w *crlWatch) load() error {
	fi, err := os.Stat(w.path)
	if err != nil {
		return err
	}
	if fi.ModTime().Equal(w.mtime) && w.serials != nil {
		return nil
	}
	b, err := os.ReadFile(w.path)
	if err != nil {
		return err
	}
	if blk, _ := pem.Decode(b); blk != nil {
		b = blk.Bytes
	}
	rl, err := x509.ParseRevocationList(b)
	if err != nil {
		return err
	}
	signed := false
	for _, ca := range w.cas {
		if rl.CheckSignatureFrom(ca) == nil {
			signed = true
		}
	}
	if !signed {
		return fmt.Errorf("%s is not signed by the client CA", w.path)
	}
	serials := make(map[string]bool, len(rl.RevokedCertificateEntries))
	for _, e := range rl.RevokedCertificateEntries {
		serials[serialKey(e.SerialNumber)] = true
	}
	w.mtime, w.issuer, w.serials = fi.ModTime(), string(rl.RawIssuer), serials
	w.log.Info("DTLS certificate revocation list loaded", "file", w.path, "revoked", len(serials))
	return nil
}

// revoked reports whether the list revokes c.
func (w *crlWatch) revoked(c *x509.Certificate) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now := time.Now(); now.Sub(w.checked) >= time.Second {
		w.checked = now
		if err := w.load(); err != nil {
			w.log.Error("DTLS certificate revocation list not reloaded: keeping the one before", "file", w.path, "error", err)
		}
	}
	return string(c.RawIssuer) == w.issuer && w.serials[serialKey(c.SerialNumber)]
}

func serialKey(n *big.Int) string { return n.String() }
