package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/farthing-iot/farthing/gateway/ledger"
)

// auditFiles is the files audit sink: bundles appended as JSON lines to
// DIR/audit-YYYYMMDDTHHMMSSZ.jsonl (0600), a new file every rotation,
// each write synced before the bundles count as taken.
type auditFiles struct {
	dir    string
	rotate time.Duration
	f      *os.File
	opened time.Time
}

func (a *auditFiles) write(bundles []ledger.AuditBundle, now time.Time) error {
	if a.f == nil || now.Sub(a.opened) >= a.rotate {
		if a.f != nil {
			a.f.Close()
		}
		if err := os.MkdirAll(a.dir, 0o700); err != nil {
			return err
		}
		name := filepath.Join(a.dir, "audit-"+now.UTC().Format("20060102T150405Z")+".jsonl")
		f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		a.f, a.opened = f, now
	}
	var buf []byte
	for _, b := range bundles {
		line, err := json.Marshal(b)
		if err != nil {
			return err
		}
		buf = append(append(buf, line...), '\n')
	}
	if _, err := a.f.Write(buf); err != nil {
		return err
	}
	return a.f.Sync()
}

func (a *auditFiles) close() {
	if a.f != nil {
		a.f.Close()
	}
}

// shipAudit hands the audit sink the bundles of aggregates sealed since it
// last ran, and records how far it got.
func (g *Gateway) shipAudit(ctx context.Context, now time.Time) error {
	if g.audit == nil {
		return nil
	}
	for range 16 { // at most 16 × 256 aggregates a round
		bundles, through, err := g.ingest.Books().AuditBundles(&g.ingest.Snapshot().Terms, 256)
		if err != nil {
			return err
		}
		if len(bundles) > 0 {
			if err := g.audit.write(bundles, now); err != nil {
				return fmt.Errorf("audit sink %s: %w", g.audit.dir, err)
			}
		}
		if err := g.ingest.Books().AuditShipped(ctx, through); err != nil {
			return err
		}
		if len(bundles) < 256 {
			return nil
		}
	}
	return nil
}
