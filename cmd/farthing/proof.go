package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// runProof prints the inclusion proof of one ticket in its aggregate(s).
func runProof(e *env, args []string) error {
	fs := newFlags("proof")
	data := fs.String("data", defaultData, "the gateway's data directory")
	ticket := fs.String("ticket", "", "DEVICE/SEQ")
	audit := fs.String("audit", "", "prove from an audit sink's files (a file or a directory) instead of the gateway")
	pub := fs.String("pub", "", "with --audit: the gateway's public key, to check each aggregate's signature")
	op := addOperatorFlags(fs)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	dev, seqStr, ok := strings.Cut(*ticket, "/")
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if !ok || dev == "" || err != nil {
		return usageError{"--ticket DEVICE/SEQ is required"}
	}
	if *audit != "" {
		proofs, err := proveFromAudit(*audit, *pub, *ticket)
		if err != nil {
			return err
		}
		return printJSON(e, proofs)
	}
	var proofs []ledger.Proof
	err = op.getJSON(*data, "/proof?ticket="+url.QueryEscape(*ticket), &proofs)
	if err != nil && !errors.Is(err, errNoDaemon) {
		return err
	}
	if err != nil {
		st, err := store.Open(filepath.Join(*data, gateway.StateFile), store.Options{ReadOnly: true})
		if err != nil {
			return err
		}
		defer st.Close()
		if proofs, err = ledger.New(st, ledger.Config{}).TicketProofs(dev, seq); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(proofs)
}

// proveFromAudit proves ticket from the bundles in an audit sink's files:
// each bundle's aggregate is decoded strictly (and its signature checked
// with pub, when given) and the ticket's path checked against its root.
func proveFromAudit(path, pub, ticket string) ([]ledger.Proof, error) {
	files := []string{path}
	if fi, err := os.Stat(path); err != nil {
		return nil, err
	} else if fi.IsDir() {
		if files, err = filepath.Glob(filepath.Join(path, "audit-*.jsonl")); err != nil {
			return nil, err
		}
	}
	var verifier protocol.Verifier
	if pub != "" {
		k, err := keyfile.Load(pub)
		if err != nil {
			return nil, err
		}
		if k.Public == nil {
			return nil, fmt.Errorf("%s: not an Ed25519 public key", pub)
		}
		if verifier, err = strict.NewEd25519Verifier(k.Public); err != nil {
			return nil, err
		}
	}
	proofs := []ledger.Proof{}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 1<<20), 256<<20)
		for sc.Scan() {
			if !bytes.Contains(sc.Bytes(), []byte(`"ticket":"`+ticket+`"`)) {
				continue
			}
			var b ledger.AuditBundle
			if err := json.Unmarshal(sc.Bytes(), &b); err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			raw, err := hex.DecodeString(b.Aggregate)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: bundle %d: %w", name, b.Seq, err)
			}
			env, agg, err := strict.DecodeAggregate(raw)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: bundle %d: %w", name, b.Seq, err)
			}
			if verifier != nil {
				if err := env.Verify(verifier, nil); err != nil {
					f.Close()
					return nil, fmt.Errorf("%s: bundle %d: the aggregate's signature: %w", name, b.Seq, err)
				}
			}
			p, found, err := ledger.ProveFromBundle(b, agg, ticket)
			if err != nil {
				f.Close()
				return nil, err
			}
			if found {
				proofs = append(proofs, p)
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if len(proofs) == 0 {
		return nil, fmt.Errorf("%w: %s is in no bundle under %s", ledger.ErrNoProof, ticket, path)
	}
	return proofs, nil
}
